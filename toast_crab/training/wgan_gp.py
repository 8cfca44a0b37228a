"""The WGAN-GP training recipe: a Wasserstein critic with gradient penalty.

The recipe follows Gulrajani et al. 2017 (arXiv:1704.00028). The critic loss is
``E[D(G(z))] - E[D(x)] + lambda * E[(||grad D(x_hat)||_2 - 1)^2]``, with the gradient
norm taken per chunk over all its samples at random interpolates
``x_hat = a * x + (1 - a) * G(z)``, ``a ~ U(0, 1)`` per chunk. The generator loss is
``-E[D(G(z))]``. Each step makes ``n_critic`` critic updates, each on its own real
batch, then one generator update and one update of an exponential moving average
(EMA) of the generator weights. Both networks use Adam (default 1e-4, beta_1 = 0,
beta_2 = 0.9, as in the paper).

The generator is the CRAB generator; the critic is
:func:`toast_crab.models.build_wgan_critic`. Data handling, the asinh amplitude
transform (``scale_w`` = robust standard deviation of the training samples), the
split by MC run, the logs and the validation figures are those of the ``crab_bce``
recipe. At every evaluation both generators are diagnosed against fixed validation
chunks (:mod:`toast_crab.training.diagnostics`). By default the exported generator
is the raw or EMA snapshot with the lowest checkpoint score seen during training;
``export_generator`` can choose the last EMA or raw weights instead.
"""

import json
import os
import time
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from .adversarial import AdversarialTrainer
from . import crab_bce, diagnostics
from .config import TomlConfig
from .crab_bce import compare_chunks, make_training_dataset

__all__ = [
    "FAMILY",
    "WganGP",
    "WganGPConfig",
    "gradient_penalty",
    "selection_score",
    "train_wgan_gp",
]

FAMILY = "wgan_gp"

# Floor of the tail-fraction ratio in the selection score. A generated tail
# fraction of zero would make the log ratio infinite, so it scores 3 instead.
_TAIL_RATIO_FLOOR = 1e-3


@dataclass(frozen=True)
class WganGPConfig(TomlConfig):
    """Settings of one ``wgan_gp`` training run.

    The TOML config groups the fields in tables: top level (``family``, ``name``,
    ``description``, ``seed``), ``[data]``, ``[model]``, ``[training]`` and
    ``[output]``. See ``configs/wgan_gp.toml`` for a commented example. Relative
    paths resolve against the current working directory.
    """

    # top level
    name: str = "wgan_model"
    description: str = ""
    seed: int = 1234
    # [data]
    data_path: str = ""
    validation_fraction: float = 0.1
    # [model]
    latent_dim: int = 100
    critic_filters: tuple = (16, 32, 32)
    critic_kernel_size: int = 9
    # [training]
    batch_size: int = 64
    steps: int = 20000
    n_critic: int = 5
    gp_weight: float = 10.0
    g_learning_rate: float = 1e-4
    d_learning_rate: float = 1e-4
    adam_beta_1: float = 0.0
    adam_beta_2: float = 0.9
    ema_decay: float = 0.999
    export_generator: str = "best"
    # [output]
    out_dir: str = "out/wgan_gp"
    bundle_path: str = ""
    checkpoint_interval: int = 1000
    eval_interval: int = 500
    n_eval_chunks: int = 256
    n_validation_chunks: int = 2000

    # TOML table -> {TOML key: field name}
    _FAMILY = FAMILY

    _LAYOUT = {
        "": {"family": None, "name": "name", "description": "description", "seed": "seed"},
        "data": {"path": "data_path", "validation_fraction": "validation_fraction"},
        "model": {key: key for key in ("latent_dim", "critic_filters", "critic_kernel_size")},
        "training": {
            key: key
            for key in (
                "batch_size", "steps", "n_critic", "gp_weight", "g_learning_rate",
                "d_learning_rate", "adam_beta_1", "adam_beta_2", "ema_decay",
                "export_generator",
            )
        },
        "output": {
            "dir": "out_dir",
            "bundle": "bundle_path",
            "checkpoint_interval": "checkpoint_interval",
            "eval_interval": "eval_interval",
            "n_eval_chunks": "n_eval_chunks",
            "n_validation_chunks": "n_validation_chunks",
        },
    }

    def __post_init__(self):
        # TOML arrays arrive as lists; the frozen config stores a tuple.
        if isinstance(self.critic_filters, list):
            object.__setattr__(self, "critic_filters", tuple(self.critic_filters))
        self._check_types()
        self._check_values()

    def _check_values(self):
        positive = (
            "latent_dim", "critic_kernel_size", "batch_size", "steps", "n_critic",
            "g_learning_rate", "d_learning_rate", "checkpoint_interval", "eval_interval",
            "n_eval_chunks", "n_validation_chunks",
        )
        for key in positive:
            if not getattr(self, key) > 0:
                raise ValueError(
                    f"wgan_gp config entry {key!r} must be positive. Got {getattr(self, key)!r}."
                )
        if self.gp_weight < 0:
            raise ValueError(f"wgan_gp config entry 'gp_weight' must be >= 0. Got {self.gp_weight!r}.")
        for key in ("adam_beta_1", "adam_beta_2", "ema_decay"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise ValueError(
                    f"wgan_gp config entry {key!r} must be in [0, 1). Got {getattr(self, key)!r}."
                )
        if not self.critic_filters or not all(
            isinstance(value, int) and not isinstance(value, bool) and value > 0
            for value in self.critic_filters
        ):
            raise ValueError(
                "wgan_gp config entry 'critic_filters' must be a non-empty list of positive "
                f"ints. Got {list(self.critic_filters)!r}."
            )
        if self.export_generator not in crab_bce.EXPORT_CHOICES:
            raise ValueError(
                f"wgan_gp config entry 'export_generator' must be one of "
                f"{list(crab_bce.EXPORT_CHOICES)}. Got {self.export_generator!r}."
            )
        if not 0.0 < self.validation_fraction < 1.0:
            raise ValueError(
                f"wgan_gp config entry 'validation_fraction' must be in (0, 1). "
                f"Got {self.validation_fraction!r}."
            )
        if not self.data_path:
            raise ValueError(
                "wgan_gp config has no training set: set [data] path in the TOML or "
                "pass --data PATH."
            )


def gradient_penalty(critic, real, fake, alpha):
    """Return the WGAN-GP penalty and the per-chunk gradient norms.

    The norm is taken per chunk, over all of its samples (and channels), at the
    interpolates ``x_hat = alpha * real + (1 - alpha) * fake``; the penalty is the
    batch mean of ``(norm - 1)^2``. A norm over the whole batch would be a weaker
    constraint.

    Args:
        critic (callable): Maps (batch, ...) float32 chunks to (batch, 1) scores.
        real (tensor): (batch, ...) float32, network space.
        fake (tensor): Same shape as ``real``.
        alpha (tensor): (batch, 1, ...) float32 in [0, 1], broadcastable to
            ``real``; one weight per chunk.

    Returns:
        (tuple): ``(penalty, norms)``: a float32 scalar and (batch,) float32.
    """
    interpolates = alpha * real + (1.0 - alpha) * fake
    with tf.GradientTape() as tape:
        tape.watch(interpolates)
        scores = critic(interpolates, training=True)
    gradients = tape.gradient(scores, interpolates)
    sample_axes = list(range(1, len(gradients.shape)))
    # The 1e-12 keeps the square root differentiable where a gradient is zero.
    norms = ops.sqrt(ops.sum(ops.square(gradients), axis=sample_axes) + 1e-12)
    return ops.mean(ops.square(norms - 1.0)), norms


class WganGP(AdversarialTrainer):
    """Generator and critic trained with the WGAN-GP recipe.

    Each ``train_step`` receives ``n_critic * batch_size`` real chunks and makes
    ``n_critic`` critic updates, each on its own ``batch_size`` slice with fresh
    latents and interpolation weights, then one generator update and one EMA update.

    Critic loss: ``mean D(G(z)) - mean D(x) + gp_weight * GP``, with ``GP`` from
    :func:`gradient_penalty`. Generator loss: ``-mean D(G(z))``.

    Args:
        generator (keras.Model): Latent (batch, latent_dim) to chunk
            (batch, chunk_length).
        critic (keras.Model): Chunk to score (batch, 1); no batch normalization.
        n_critic (int): Critic updates per generator update.
        gp_weight (float): ``lambda`` of the gradient penalty.
        ema_decay (float): Decay of the EMA generator; the decay used at update
            ``t`` is ``min(ema_decay, (1 + t) / (10 + t))``.
        seed (int): Seed of the model's ``SeedGenerator`` (latents, interpolation
            weights).

    Limitations:
        The minibatch standard deviation channel of the critic couples the chunks
        of a batch, so the gradient of one chunk's score also depends on the other
        interpolates. The penalty still takes the gradient norm per chunk.
    """

    def __init__(self, generator, critic, n_critic=5, gp_weight=10.0, ema_decay=0.999,
                 seed=None, **kwargs):
        super().__init__(**kwargs)
        self.generator = generator
        self.critic = critic
        self.ema_generator = keras.models.clone_model(generator)
        self.ema_generator.set_weights(generator.get_weights())
        self.latent_dim = int(generator.inputs[0].shape[-1])
        self.n_critic = int(n_critic)
        self.gp_weight = float(gp_weight)
        self.ema_decay = float(ema_decay)
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.built = True

    def _opponent(self):
        return self.critic

    def call(self, latent, training=False):
        return self.generator(latent, training=training)

    def _latents(self, batch_size):
        return keras.random.normal((batch_size, self.latent_dim), seed=self.seed_generator)

    def _critic_step(self, real):
        batch_size = ops.shape(real)[0]
        fake = self.generator(self._latents(batch_size), training=True)
        alpha = keras.random.uniform((batch_size, 1), seed=self.seed_generator)
        with tf.GradientTape() as tape:
            real_scores = self.critic(real, training=True)
            fake_scores = self.critic(fake, training=True)
            penalty, norms = gradient_penalty(self.critic, real, fake, alpha)
            wasserstein = ops.mean(real_scores) - ops.mean(fake_scores)
            d_loss = -wasserstein + self.gp_weight * penalty
        weights = self.critic.trainable_variables
        self.d_optimizer.apply_gradients(zip(tape.gradient(d_loss, weights), weights))
        return {
            "d_loss": d_loss,
            "wasserstein_estimate": wasserstein,
            "gradient_penalty": penalty,
            "gradient_norm": ops.mean(norms),
            "d_real": ops.mean(real_scores),
            "d_fake": ops.mean(fake_scores),
        }

    def _generator_step(self, batch_size):
        latents = self._latents(batch_size)
        with tf.GradientTape() as tape:
            fake = self.generator(latents, training=True)
            g_loss = -ops.mean(self.critic(fake, training=True))
        weights = self.generator.trainable_variables
        self.g_optimizer.apply_gradients(zip(tape.gradient(g_loss, weights), weights))
        return g_loss

    def train_step(self, data):
        real = ops.convert_to_tensor(data, dtype="float32")
        batch_size = ops.shape(real)[0] // self.n_critic
        for index in range(self.n_critic):
            metrics = self._critic_step(real[index * batch_size : (index + 1) * batch_size])
        metrics["g_loss"] = self._generator_step(batch_size)
        self._update_ema()
        return metrics


def selection_score(figures):
    """Return the amplitude-only score of one snapshot; lower is better.

    It is logged as ``<label>_ks_tail_score`` in ``eval.csv``; snapshots are
    selected by :func:`toast_crab.training.diagnostics.checkpoint_score`, which
    also measures diversity and glitch statistics.

    The score is ``ks_samples + ks_chunk_max + |log10(r)|`` with ``r`` the ratio of
    generated to reference fraction of samples beyond 5 robust sigma, floored at
    1e-3. The first term measures the whole amplitude distribution, the second the
    per-chunk maxima (how often large events occur), the third the glitch tail.

    Args:
        figures (dict): Output of :func:`compare_chunks`.

    Returns:
        (float): The score, >= 0; 0 for identical sets.
    """
    tail = figures["fraction_beyond_5_sigma"]
    reference = tail["reference"]
    if reference <= 0:
        tail_term = 0.0 if tail["generated"] <= 0 else abs(np.log10(_TAIL_RATIO_FLOOR))
    else:
        ratio = max(tail["generated"] / reference, _TAIL_RATIO_FLOOR)
        tail_term = abs(float(np.log10(ratio)))
    return float(figures["ks_samples"] + figures["ks_chunk_max"] + tail_term)


def train_wgan_gp(config, progress=True):
    """Train a CRAB generator with the WGAN-GP recipe and write logs, plots and a bundle.

    Outputs under ``config.out_dir``, as for ``crab_bce``:

    * ``log.csv`` and ``tensorboard/``: every loss and metric for every step, with
      the step time in ms.
    * ``eval.csv``: figures, diagnostics and checkpoint score (``<label>_score``)
      of the raw and EMA generator on fixed latents, every ``eval_interval`` steps
      and at the end; also written to TensorBoard under ``eval/``.
    * ``checkpoints/step_*.weights.h5`` and ``final.weights.h5``: trainer weights;
      ``checkpoints/best_generator.weights.h5``: the best-scoring generator.
    * ``plots/*.png`` (``diagnostics.png`` among them), ``config.json`` (the
      resolved settings) and ``card.json``.

    The bundle goes to ``config.resolved_bundle_path()``. With
    ``export_generator = "best"`` it is the generator snapshot with the lowest
    checkpoint score; the card records the snapshot and the reason.

    Args:
        config (WganGPConfig): The run settings.
        progress (bool): Show a tqdm progress bar.

    Returns:
        (dict): ``bundle`` (keras path), ``card`` (the model card), ``out_dir``,
        ``log_csv``, ``plots`` (list of PNG paths of the training curves and
        samples) and ``diagnostics_plot`` (path of ``diagnostics.png``).

    Raises:
        TypeError: If ``config`` is not a ``WganGPConfig``.
        FileNotFoundError: If the training set does not exist.
        ValueError: If the training set cannot be split or scaled, or is smaller
            than ``n_critic * batch_size`` chunks.
    """
    if not isinstance(config, WganGPConfig):
        raise TypeError(f"config must be a WganGPConfig. Got {type(config).__name__}.")
    if not os.path.isfile(config.data_path):
        raise FileNotFoundError(
            f"Training set {config.data_path!r} not found. Make one with "
            "`crab-mc --config examples/mc_default.toml --n-chunks 20000 --n-runs 100 "
            f"--out {config.data_path}` or pass --data PATH."
        )
    from ..bundle import save_bundle

    wall_start = time.perf_counter()
    keras.utils.set_random_seed(config.seed)
    data = crab_bce._prepare_data(config)
    # One dataset element feeds the n_critic critic updates of a step.
    dataset = make_training_dataset(
        data["train_y"], config.n_critic * config.batch_size, config.seed
    )
    trainer = _build_trainer(config, data["train"].chunk_length)
    run = crab_bce._prepare_run(config, pretrain_steps=0)

    # Fixed latents and validation chunks for the periodic and final evaluation.
    latent_rng = np.random.default_rng(np.random.SeedSequence([config.seed, 1]))
    n_validation = min(config.n_validation_chunks, data["val"].n_chunks)
    data["validation_w"] = data["val"].chunks[:n_validation]
    data["latents"] = latent_rng.standard_normal((n_validation, config.latent_dim)).astype(
        np.float32
    )
    selector = crab_bce._SnapshotEvaluator(
        config, data, trainer, run["eval_csv"],
        best_path=os.path.join(run["checkpoint_dir"], "best_generator.weights.h5"),
        extra_columns=_ks_tail_column,
    )
    run["evaluate"] = selector.evaluate

    logger = crab_bce._StepLogger(run, progress=progress)
    logger.phase = "adversarial"
    train_start = time.perf_counter()
    try:
        trainer.fit(
            dataset, epochs=1, steps_per_epoch=config.steps, verbose=0, shuffle=False,
            callbacks=[logger],
        )
    finally:
        logger.close()
    train_seconds = time.perf_counter() - train_start
    trainer.save_weights(os.path.join(run["checkpoint_dir"], "final.weights.h5"))
    if not selector.rows or selector.rows[-1]["step"] != config.steps:
        crab_bce.write_final_eval_row(run, selector.evaluate(config.steps))

    exported, exported_name = crab_bce.choose_export(config, trainer, selector)
    validation, generated_w, diagnosis = _validate(
        config, data, trainer, exported, exported_name
    )
    plot_paths = plot_wgan_run(run, data, generated_w, config.name)
    diagnostics_plot = crab_bce.plot_diagnostics_run(run, selector, diagnosis, config.name)

    step_ms = [ms for _, ms in logger.step_ms]
    timing = {
        "train_loop_time_s": float(train_seconds),
        "adversarial_step_ms_median": float(np.median(step_ms)) if step_ms else None,
        # The first steps include graph tracing; the median after them is the
        # steady-state cost.
        "adversarial_step_ms_median_after_10": (
            float(np.median(step_ms[10:])) if len(step_ms) > 10 else None
        ),
    }
    card = _make_card(config, data, trainer, timing, validation, selector)
    card["training"]["wall_time_s"] = float(time.perf_counter() - wall_start)
    keras_path, _ = save_bundle(exported, card, config.resolved_bundle_path())
    with open(os.path.join(config.out_dir, "card.json"), "w", encoding="utf-8") as handle:
        json.dump(card, handle, indent=2, sort_keys=True)
    return {
        "bundle": keras_path,
        "card": card,
        "out_dir": config.out_dir,
        "log_csv": run["log_csv"],
        "plots": plot_paths,
        "diagnostics_plot": diagnostics_plot,
    }


def _ks_tail_column(label, figures):
    return {f"{label}_ks_tail_score": selection_score(figures)}


def _build_trainer(config, chunk_length):
    from ..models import build_crab_generator, build_wgan_critic

    trainer = WganGP(
        build_crab_generator(config.latent_dim, chunk_length),
        build_wgan_critic(
            chunk_length, filters=config.critic_filters, kernel_size=config.critic_kernel_size
        ),
        n_critic=config.n_critic,
        gp_weight=config.gp_weight,
        ema_decay=config.ema_decay,
        seed=config.seed,
    )
    trainer.compile(
        g_optimizer=keras.optimizers.Adam(
            config.g_learning_rate, beta_1=config.adam_beta_1, beta_2=config.adam_beta_2
        ),
        d_optimizer=keras.optimizers.Adam(
            config.d_learning_rate, beta_1=config.adam_beta_1, beta_2=config.adam_beta_2
        ),
    )
    return trainer


def _critic_mean_score(critic, chunks_y, batch_size=512):
    scores = [
        np.asarray(critic.predict_on_batch(chunks_y[i : i + batch_size]))
        for i in range(0, chunks_y.shape[0], batch_size)
    ]
    return float(np.mean(np.concatenate(scores)))


def _validate(config, data, trainer, exported, exported_name):
    """Measure the exported and the last raw generator on the held-out chunks.

    Returns:
        (tuple): The card's ``validation`` entry, the exported generator's chunks
        ((n_chunks, chunk_length) float64, W) and their diagnosis on all
        validation chunks.
    """
    sample_rate_hz = data["train"].sample_rate_hz
    validation_w = data["validation_w"]
    transform = data["transform"]
    generated_w = crab_bce._generate_w(exported, data["latents"], transform)
    last_w = crab_bce._generate_w(trainer.generator, data["latents"], transform)
    n_validation = validation_w.shape[0]

    # MC-vs-MC figures give the scale of sampling differences between MC runs.
    baseline_rng = np.random.default_rng(np.random.SeedSequence([config.seed, 2]))
    n_baseline = min(n_validation, data["train"].n_chunks)
    baseline_index = np.sort(
        baseline_rng.choice(data["train"].n_chunks, size=n_baseline, replace=False)
    )
    baseline_w = data["train"].chunks[baseline_index]
    diagnosis = diagnostics.diagnose(validation_w, generated_w, seed=config.seed)
    baseline_diagnosis = diagnostics.diagnose(
        validation_w[:n_baseline], baseline_w, seed=config.seed
    )

    validation = {
        "method": (
            "held-out validation chunks (whole MC runs, first n_chunks of the split) "
            "vs the same number of generated chunks from fixed latents "
            f"(SeedSequence([{config.seed}, 1])); 'reference' is the validation MC"
        ),
        "generator": exported_name,
        "figures": compare_chunks(validation_w, generated_w, sample_rate_hz),
        "diagnostics": diagnostics.diagnosis_to_json(diagnosis),
        "last_raw_generator": {
            "generator": f"raw at step {config.steps}",
            "figures": compare_chunks(validation_w, last_w, sample_rate_hz),
        },
        "critic_mean_score": {
            "note": "critic of the last step, not of the exported snapshot",
            "validation": _critic_mean_score(trainer.critic, data["val_y"][:n_validation]),
            "generated": _critic_mean_score(
                trainer.critic, transform.forward(generated_w).astype(np.float32)
            ),
        },
        "mc_vs_mc": {
            "method": "the same figures for training-split MC chunks vs the validation MC chunks",
            "figures": compare_chunks(validation_w[:n_baseline], baseline_w, sample_rate_hz),
            "diagnostics": diagnostics.diagnosis_to_json(baseline_diagnosis),
        },
    }
    return validation, generated_w, diagnosis


def plot_wgan_run(run, data, generated_w, title):
    """Write the PNG plots of one WGAN-GP run and return their paths.

    Args:
        run (dict): Paths of the run (``log_csv``, ``eval_csv``, ``plot_dir``).
        data (dict): ``validation_w`` (n_chunks, chunk_length) float64, W; ``train``
            (its sample rate) and ``transform`` (its ``scale_w``).
        generated_w (array): (n_chunks, chunk_length) float64, W. Exported generator.
        title (str): Prefix of the plot titles, usually the model name.

    Returns:
        (list): Paths of the PNG files written.
    """
    from . import plots

    out_dir = run["plot_dir"]
    log = plots.read_log(run["log_csv"])
    sample_rate_hz = data["train"].sample_rate_hz
    validation_w = data["validation_w"]
    paths = [
        plots._plot_curves(
            log, ["d_loss", "g_loss"], "loss", f"{title}: critic (with penalty) and generator loss",
            os.path.join(out_dir, "losses.png"),
        ),
        plots._plot_curves(
            log, ["wasserstein_estimate", "gradient_penalty"], "network-space units",
            f"{title}: Wasserstein estimate mean D(real) - mean D(fake), and gradient penalty",
            os.path.join(out_dir, "wasserstein.png"),
        ),
        plots._plot_curves(
            log, ["d_real", "d_fake"], "mean critic score",
            f"{title}: critic score on real and generated chunks",
            os.path.join(out_dir, "critic_response.png"),
        ),
    ]
    paths += plots.plot_sample_comparison(
        validation_w, generated_w, sample_rate_hz, data["transform"].scale_w, title, out_dir
    )
    if os.path.isfile(run["eval_csv"]) and os.path.getsize(run["eval_csv"]) > 0:
        paths.append(
            plots._plot_eval(
                plots.read_log(run["eval_csv"]), title, os.path.join(out_dir, "evaluation.png")
            )
        )
    return paths


def _make_card(config, data, trainer, timing, validation, selector):
    from .. import __version__
    from ..bundle import CARD_SCHEMA, CARD_SCHEMA_VERSION

    n_validation = data["validation_w"].shape[0]
    training = {
        "recipe": "WGAN-GP, Gulrajani et al. 2017 (toast_crab.training.wgan_gp)",
        "settings": config.to_toml_dict(),
        "seed": config.seed,
        "adversarial_steps": int(config.steps),
        "generator_params": int(trainer.generator.count_params()),
        "critic_params": int(trainer.critic.count_params()),
        "wall_time_s": None,
        "machine": crab_bce._machine_description(),
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
        "numpy_version": np.__version__,
        "toast_crab_version": __version__,
        "git_commit": crab_bce._git_commit(),
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    training.update(timing)
    training.update(crab_bce._export_entry(config, selector, n_validation))
    return {
        "schema": CARD_SCHEMA,
        "schema_version": CARD_SCHEMA_VERSION,
        "name": config.name,
        "description": config.description,
        "family": FAMILY,
        "sample_rate_hz": float(data["train"].sample_rate_hz),
        "chunk_length": int(data["train"].chunk_length),
        "output_unit": "W",
        "transform": data["transform"].to_card(),
        "latent_shape": [int(config.latent_dim)],
        "latent_distribution": "standard normal, float32",
        "conditioning": {},
        "training_data": crab_bce._training_data_entry(config, data),
        "training": training,
        "validation": validation,
    }
