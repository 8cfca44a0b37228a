"""``crab-train``: train a toast_crab generator from a TOML config.

Usage::

    crab-train --config configs/crab_bce.toml [--data PATH] [--out DIR]
               [--steps N] [--bundle PATH]

The config's ``family`` entry picks the trainer: ``crab_bce`` (the original CRAB
recipe, ``configs/crab_bce.toml``), ``wgan_gp`` (``configs/wgan_gp.toml``), ``vae``
(``configs/vae.toml``) or ``seamless`` (a fully convolutional generator conditioned on
the solar modulation potential, ``configs/seamless.toml``).

Exit codes: 0 on success, 2 on a bad command line, config or training set
(unknown family, missing file, invalid value).
"""

import argparse
import dataclasses
import os
import sys
import tomllib

__all__ = ["TRAINING_FAMILIES", "load_config", "main", "run_training"]

# Model family -> (module, config class, train function), imported on demand.
TRAINING_FAMILIES = {
    "crab_bce": ("toast_crab.training.crab_bce", "CrabBCEConfig", "train_crab_bce"),
    "wgan_gp": ("toast_crab.training.wgan_gp", "WganGPConfig", "train_wgan_gp"),
    "vae": ("toast_crab.training.vae", "VAEConfig", "train_vae"),
    "seamless": ("toast_crab.training.seamless", "SeamlessConfig", "train_seamless"),
}


def _family_entry(family):
    import importlib

    if family not in TRAINING_FAMILIES:
        raise ValueError(
            f"Unknown model family {family!r} in the training config; crab-train knows "
            f"{sorted(TRAINING_FAMILIES)}. Set family to one of them."
        )
    module_name, config_name, train_name = TRAINING_FAMILIES[family]
    module = importlib.import_module(module_name)
    return getattr(module, config_name), getattr(module, train_name)


def load_config(path, data=None, out=None, steps=None, bundle=None):
    """Read a training config and apply command-line overrides.

    Args:
        path (str): The TOML file.
        data (str): Training-set path replacing ``[data] path``.
        out (str): Output folder replacing ``[output] dir``.
        steps (int): Adversarial steps replacing ``[training] steps``.
        bundle (str): Bundle path replacing ``[output] bundle``.

    Returns:
        (tuple): ``(family, config)``, where ``config`` is the family's config
        dataclass.

    Raises:
        FileNotFoundError: If the config file does not exist.
        ValueError: If the TOML is invalid, the family is unknown or a value is
            out of range.
        TypeError: If a value has the wrong type.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"Training config {path!r} not found. Give the path of a TOML file, e.g. "
            "configs/crab_bce.toml in the toast_crab source tree."
        )
    try:
        with open(path, "rb") as handle:
            table = tomllib.load(handle)
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"Training config {path!r} is not valid TOML ({err}).") from err
    family = table.get("family")
    if family is None:
        raise ValueError(
            f"Training config {path!r} has no 'family' entry; add e.g. family = \"crab_bce\"."
        )
    config_class, _ = _family_entry(family)

    # An empty data path is filled from --data before the config checks it.
    if data is not None:
        table.setdefault("data", {})["path"] = data
    config = config_class.from_toml_dict(table, source=f"Training config {path!r}")
    overrides = {}
    if out is not None:
        overrides["out_dir"] = out
    if steps is not None:
        overrides["steps"] = steps
    if bundle is not None:
        overrides["bundle_path"] = bundle
    if overrides:
        config = dataclasses.replace(config, **overrides)
    return family, config


def run_training(family, config, progress=True):
    """Train one model with the trainer of ``family``.

    Args:
        family (str): Model family, a key of ``TRAINING_FAMILIES``.
        config: The family's config dataclass.
        progress (bool): Show a progress bar.

    Returns:
        (dict): What the family's train function returns (bundle path, card, ...).

    Raises:
        ValueError: If the family is unknown.
        FileNotFoundError: If the training set does not exist.
    """
    _, train = _family_entry(family)
    return train(config, progress=progress)


def _parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="crab-train",
        description="Train a toast_crab generator and write its model bundle.",
    )
    parser.add_argument("--config", required=True, help="TOML training config.")
    parser.add_argument("--data", help="Training-set HDF5 file (replaces [data] path).")
    parser.add_argument("--out", help="Output folder for logs and plots (replaces [output] dir).")
    parser.add_argument(
        "--steps", type=int, help="Adversarial training steps (replaces [training] steps)."
    )
    parser.add_argument(
        "--bundle", help="Path of the .keras bundle to write (replaces [output] bundle)."
    )
    return parser, parser.parse_args(argv)


def main(argv=None):
    """Run crab-train; return the process exit code."""
    parser, args = _parse_args(argv)
    try:
        family, config = load_config(
            args.config, data=args.data, out=args.out, steps=args.steps, bundle=args.bundle
        )
        # Families trained on several sets (flux conditioning) list them in training_paths.
        paths = list(getattr(config, "training_paths", None) or [config.data_path])
        for path in paths:
            if not os.path.isfile(path):
                raise FileNotFoundError(
                    f"Training set {path!r} not found. Make the sets with "
                    "`bash scripts/make_training_sets.sh`, or one with `crab-mc --config "
                    "examples/mc_default.toml --n-chunks 20000 --n-runs 100 "
                    f"--out {path}`, or pass --data PATH."
                )
    except (FileNotFoundError, ValueError, TypeError) as err:
        print(f"crab-train: error: {err}", file=sys.stderr)
        return 2

    result = run_training(family, config)
    card = result["card"]
    print(f"crab-train: wrote {result['bundle']} and its card")
    print(f"crab-train: logs and plots in {result['out_dir']}")
    summary = f"crab-train: wall time {card['training'].get('wall_time_s', float('nan')):.0f} s"
    figures = card["validation"].get("figures", {})
    if "ks_samples" in figures and "rms_w" in figures:
        summary += (
            f"; validation KS (samples) {figures['ks_samples']:.3f}, RMS generated/MC "
            f"{figures['rms_w']['generated'] / figures['rms_w']['reference']:.3f}"
        )
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
