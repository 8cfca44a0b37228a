"""The VAE training recipe: a convolutional VAE with a Student-t likelihood.

The model is the variational autoencoder of Kingma and Welling 2014
(arXiv:1312.6114) with the networks of :mod:`toast_crab.models.vae`. The loss per
chunk is the negative evidence lower bound with a weight on the KL term,

``loss = -sum_t log StudentT(y_t | loc_t(z), scale_t(z), dof) + beta * KL(q(z|y) || N(0, I))``,

with ``z`` drawn from the encoder's diagonal Gaussian by the reparameterization
trick. The weight ``beta`` rises linearly from 0 to ``kl_weight`` over the first
``kl_warmup_steps`` steps (a KL warm-up, Bowman et al. 2016, arXiv:1511.06349), so
the decoder learns to use the code before the KL term pulls the posterior to the
prior. The degrees of freedom ``dof`` are fixed, not learned, because the exported
generator draws the Student-t noise from ``dof + 1`` latent normals per sample,
which needs an integer.

Data handling, the asinh amplitude transform (``scale_w`` = robust standard
deviation of the training samples), the split by MC run and the validation figures
are those of the ``crab_bce`` recipe. At every evaluation the generator is scored
with :func:`toast_crab.training.wgan_gp.selection_score` on held-out chunks, and the
best-scoring snapshot is exported, not the last weights.

Measured on mc_train_v1 with ``configs/vae.toml`` (6000 steps): the posterior
collapses. The KL term falls below 0.3 nats per chunk by step 500, so the decoder
returns nearly the same location and scale for every code. The "location" sample
mode then gives nearly constant chunks (held-out RMS ratio 0.68, no sample beyond
5 sigma), so the config exports "location_plus_noise": the samples are close to
independent Student-t noise around a learned level. In 1000-step runs with
``dof = 10``, a KL weight of 0.1 kept the code in use (0.85 nats per sample), but
samples from the prior scored worse (selection score 0.74 against 0.50 with a KL
weight of 1).

NOTE: the generated chunk maxima and low-frequency power fall short of the MC
(held-out KS of chunk maxima 0.18, log10 PSD ratio -0.36 below 2.8 Hz). Noise that
is symmetric in asinh space gives a lower tail that is too heavy and an upper tail
that is too light.
"""

import json
import os
import time
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from . import crab_bce
from .config import TomlConfig
from .crab_bce import compare_chunks, make_training_dataset
from .wgan_gp import selection_score

__all__ = ["FAMILY", "VAE", "VAEConfig", "kl_divergence", "train_vae"]

FAMILY = "vae"

# Steps left out of the steady-state step-time median, because the first steps
# include graph tracing.
_TRACE_STEPS = 10


@dataclass(frozen=True)
class VAEConfig(TomlConfig):
    """Settings of one ``vae`` training run.

    The TOML config groups the fields in tables: top level (``family``, ``name``,
    ``description``, ``seed``), ``[data]``, ``[model]``, ``[training]`` and
    ``[output]``. See ``configs/vae.toml`` for a commented example. Relative paths
    resolve against the current working directory.
    """

    # top level
    name: str = "vae"
    description: str = ""
    seed: int = 1234
    # [data]
    data_path: str = ""
    validation_fraction: float = 0.1
    # [model]
    latent_channels: int = 8
    strides: tuple = (5, 2, 2)
    filters: tuple = (16, 32, 32)
    kernel_size: int = 9
    student_t_dof: int = 8
    min_scale: float = 1e-3
    sample_mode: str = "location_plus_noise"
    # [training]
    batch_size: int = 64
    steps: int = 6000
    learning_rate: float = 1e-3
    adam_beta_1: float = 0.9
    adam_beta_2: float = 0.999
    kl_weight: float = 1.0
    kl_warmup_steps: int = 1000
    # [output]
    out_dir: str = "out/vae"
    bundle_path: str = ""
    checkpoint_interval: int = 1000
    eval_interval: int = 500
    n_eval_chunks: int = 256
    n_validation_chunks: int = 2000

    _FAMILY = FAMILY

    # TOML table -> {TOML key: field name}
    _LAYOUT = {
        "": {"family": None, "name": "name", "description": "description", "seed": "seed"},
        "data": {"path": "data_path", "validation_fraction": "validation_fraction"},
        "model": {
            key: key
            for key in (
                "latent_channels", "strides", "filters", "kernel_size", "student_t_dof",
                "min_scale", "sample_mode",
            )
        },
        "training": {
            key: key
            for key in (
                "batch_size", "steps", "learning_rate", "adam_beta_1", "adam_beta_2",
                "kl_weight", "kl_warmup_steps",
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
        # TOML arrays arrive as lists; the frozen config stores tuples.
        for key in ("strides", "filters"):
            if isinstance(getattr(self, key), list):
                object.__setattr__(self, key, tuple(getattr(self, key)))
        self._check_types()
        self._check_values()

    def _check_values(self):
        from ..models.vae import SAMPLE_MODES

        positive = (
            "latent_channels", "kernel_size", "student_t_dof", "min_scale", "batch_size",
            "steps", "learning_rate", "checkpoint_interval", "eval_interval",
            "n_eval_chunks", "n_validation_chunks",
        )
        for key in positive:
            if not getattr(self, key) > 0:
                raise ValueError(
                    f"vae config entry {key!r} must be positive. Got {getattr(self, key)!r}."
                )
        for key in ("kl_weight", "kl_warmup_steps"):
            if getattr(self, key) < 0:
                raise ValueError(
                    f"vae config entry {key!r} must be >= 0. Got {getattr(self, key)!r}."
                )
        for key in ("adam_beta_1", "adam_beta_2"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise ValueError(
                    f"vae config entry {key!r} must be in [0, 1). Got {getattr(self, key)!r}."
                )
        for key in ("strides", "filters"):
            values = getattr(self, key)
            if not values or not all(
                isinstance(value, int) and not isinstance(value, bool) and value > 0
                for value in values
            ):
                raise ValueError(
                    f"vae config entry {key!r} must be a non-empty list of positive ints. "
                    f"Got {list(values)!r}."
                )
        if len(self.strides) != len(self.filters):
            raise ValueError(
                f"vae config entries 'strides' {list(self.strides)} and 'filters' "
                f"{list(self.filters)} must have the same length, one entry per "
                "resampling block."
            )
        if self.sample_mode not in SAMPLE_MODES:
            raise ValueError(
                f"vae config entry 'sample_mode' must be one of {list(SAMPLE_MODES)}. "
                f"Got {self.sample_mode!r}."
            )
        if not 0.0 < self.validation_fraction < 1.0:
            raise ValueError(
                f"vae config entry 'validation_fraction' must be in (0, 1). "
                f"Got {self.validation_fraction!r}."
            )
        if not self.data_path:
            raise ValueError(
                "vae config has no training set: set [data] path in the TOML or pass "
                "--data PATH."
            )


def kl_divergence(z_mean, z_log_var):
    """Return KL(N(mean, exp(log_var)) || N(0, 1)) summed over the code, per chunk.

    Args:
        z_mean (tensor): (batch, code_dim) float32, posterior means.
        z_log_var (tensor): (batch, code_dim) float32, posterior log variances.

    Returns:
        (tensor): (batch,) float32, nats.
    """
    return 0.5 * ops.sum(
        ops.exp(z_log_var) + ops.square(z_mean) - 1.0 - z_log_var, axis=1
    )


class VAE(keras.Model):
    """Encoder and decoder trained on the negative ELBO with a Student-t likelihood.

    Each ``train_step`` encodes a batch, draws one code per chunk with the
    reparameterization trick, decodes it and makes one Adam update of both networks
    on ``mean(recon_nll + beta * kl)``. ``beta`` after ``t`` updates is
    ``kl_weight * min(1, t / kl_warmup_steps)`` (``kl_weight`` when the warm-up
    is 0).

    Args:
        encoder (keras.Model): Chunk (batch, chunk_length) to posterior mean and
            log variance, each (batch, code_dim).
        decoder (keras.Model): Code (batch, code_dim) to location and scale, each
            (batch, chunk_length).
        student_t_dof (int): Degrees of freedom of the likelihood.
        kl_weight (float): Final weight of the KL term.
        kl_warmup_steps (int): Updates over which the KL weight rises from 0.
        seed (int): Seed of the model's ``SeedGenerator`` (reparameterization).
    """

    def __init__(self, encoder, decoder, student_t_dof=4, kl_weight=1.0, kl_warmup_steps=0,
                 seed=None, **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.decoder = decoder
        self.student_t_dof = int(student_t_dof)
        self.kl_weight = float(kl_weight)
        self.kl_warmup_steps = int(kl_warmup_steps)
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.built = True

    def compile(self, optimizer, **kwargs):
        """Set the optimizer. XLA stays off unless requested, as in the GAN trainers."""
        kwargs.setdefault("jit_compile", False)
        super().compile(optimizer=optimizer, **kwargs)
        self.optimizer.build(self.encoder.trainable_variables + self.decoder.trainable_variables)

    def call(self, chunks, training=False):
        z_mean, _ = self.encoder(chunks, training=training)
        loc, _ = self.decoder(z_mean, training=training)
        return loc

    def current_kl_weight(self):
        """Return ``beta`` for the next update, float32."""
        weight = ops.convert_to_tensor(self.kl_weight, dtype="float32")
        if self.kl_warmup_steps <= 0:
            return weight
        done = ops.cast(self.optimizer.iterations, "float32")
        return weight * ops.minimum(done / float(self.kl_warmup_steps), 1.0)

    def negative_elbo_terms(self, chunks, training=False, seed_generator=None):
        """Return the per-chunk reconstruction NLL and KL of a batch, and the scales.

        Args:
            chunks (tensor): (batch, chunk_length) float32, network space.
            training (bool): Passed to the networks.
            seed_generator (keras.random.SeedGenerator): Source of the
                reparameterization normals; None uses the model's own, which the
                training steps use.

        Returns:
            (tuple): ``(recon_nll, kl, scale)``: (batch,) float32 nats, (batch,)
            float32 nats and (batch, chunk_length) float32 decoder scales.
        """
        from ..models.vae import student_t_log_prob

        z_mean, z_log_var = self.encoder(chunks, training=training)
        seed_generator = seed_generator or self.seed_generator
        epsilon = keras.random.normal(ops.shape(z_mean), seed=seed_generator)
        code = z_mean + ops.exp(0.5 * z_log_var) * epsilon
        loc, scale = self.decoder(code, training=training)
        log_prob = student_t_log_prob(chunks, loc, scale, self.student_t_dof)
        return -ops.sum(log_prob, axis=1), kl_divergence(z_mean, z_log_var), scale

    def train_step(self, data):
        chunks = ops.convert_to_tensor(data, dtype="float32")
        beta = self.current_kl_weight()
        with tf.GradientTape() as tape:
            recon_nll, kl, scale = self.negative_elbo_terms(chunks, training=True)
            loss = ops.mean(recon_nll + beta * kl)
        weights = self.encoder.trainable_variables + self.decoder.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(loss, weights), weights))
        return {
            "loss": loss,
            "recon_nll": ops.mean(recon_nll),
            "kl": ops.mean(kl),
            "kl_weight": beta,
            "negative_elbo": ops.mean(recon_nll + kl),
            "scale_mean": ops.mean(scale),
        }


class _StepLogger(crab_bce._StepLogger):
    """The crab_bce step logger with VAE losses in the progress bar.

    Rows carry the phase "train". Checkpoints and evaluations run every
    ``checkpoint_interval`` and ``eval_interval`` steps.
    """

    def __init__(self, run, progress=True):
        super().__init__(run, progress=progress)
        self.phase = "train"
        self.bar.set_description("crab-train vae")

    def on_train_batch_end(self, batch, logs=None):
        elapsed_ms = 1e3 * (time.perf_counter() - self.started)
        self.step += 1
        self.step_ms.append((self.phase, elapsed_ms))
        row = {"step": self.step, "phase": self.phase}
        row.update({key: float(np.asarray(value)) for key, value in logs.items()})
        row["step_ms"] = elapsed_ms

        self._write_row(row)
        self.bar.update(1)
        if self.step % 25 == 0 or self.step == self.run["total_steps"]:
            self.bar.set_postfix(
                recon_nll=f"{row['recon_nll']:.1f}",
                kl=f"{row['kl']:.1f}",
                beta=f"{row['kl_weight']:.2f}",
            )
            self.handle.flush()

        if self.step % self.run["checkpoint_interval"] == 0:
            name = f"step_{self.step:07d}.weights.h5"
            self.model.save_weights(os.path.join(self.run["checkpoint_dir"], name))
        if self.step % self.run["eval_interval"] == 0:
            self.run["evaluate"](self.step)


def train_vae(config, progress=True):
    """Train a VAE generator and write logs, plots and a bundle.

    Outputs under ``config.out_dir``:

    * ``log.csv`` and ``tensorboard/``: loss, reconstruction NLL, KL, KL weight,
      negative ELBO and mean decoder scale for every step, with the step time in ms.
    * ``eval.csv``: figures and selection score of both sample modes on fixed
      latents, and the held-out negative ELBO, every ``eval_interval`` steps and at
      the end.
    * ``checkpoints/step_*.weights.h5`` and ``final.weights.h5``: trainer weights
      with the optimizer; ``checkpoints/best_decoder.weights.h5``: the decoder of
      the selected snapshot.
    * ``plots/*.png``, ``config.json`` (the resolved settings) and ``card.json``.

    The bundle (the generator of ``config.sample_mode`` built on the decoder
    snapshot with the lowest :func:`~toast_crab.training.wgan_gp.selection_score`)
    goes to ``config.resolved_bundle_path()``.

    Args:
        config (VAEConfig): The run settings.
        progress (bool): Show a tqdm progress bar.

    Returns:
        (dict): ``bundle`` (keras path), ``card`` (the model card), ``out_dir``,
        ``log_csv``, ``plots`` (list of PNG paths).

    Raises:
        TypeError: If ``config`` is not a ``VAEConfig``.
        FileNotFoundError: If the training set does not exist.
        ValueError: If the training set cannot be split or scaled, or its chunk
            length is not a multiple of the product of ``strides``.
    """
    if not isinstance(config, VAEConfig):
        raise TypeError(f"config must be a VAEConfig. Got {type(config).__name__}.")
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
    trainer = _build_trainer(config, data["train"].chunk_length)
    dataset = make_training_dataset(data["train_y"], config.batch_size, config.seed)
    run = crab_bce._prepare_run(config, pretrain_steps=0)

    # Fixed latents and validation chunks for the periodic and final evaluation.
    n_validation = min(config.n_validation_chunks, data["val"].n_chunks)
    data["validation_w"] = data["val"].chunks[:n_validation]
    data["latents"] = _fixed_latents(config, trainer, n_validation)
    selector = _BestSnapshot(config, data, trainer, run)
    run["evaluate"] = selector.evaluate

    logger = _StepLogger(run, progress=progress)
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
        selector.evaluate(config.steps)

    exported = selector.exported_generator()
    validation, generated_w = _validate(config, data, trainer, exported, selector)
    plot_paths = plot_vae_run(run, data, trainer, selector, generated_w, config.name)

    step_ms = [ms for _, ms in logger.step_ms]
    timing = {
        "train_loop_time_s": float(train_seconds),
        "step_ms_median": float(np.median(step_ms)) if step_ms else None,
        "step_ms_median_after_10": (
            float(np.median(step_ms[_TRACE_STEPS:])) if len(step_ms) > _TRACE_STEPS else None
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
    }


def _build_trainer(config, chunk_length):
    from ..models.vae import build_vae_decoder, build_vae_encoder

    sizes = {
        "chunk_length": chunk_length,
        "latent_channels": config.latent_channels,
        "strides": config.strides,
        "filters": config.filters,
        "kernel_size": config.kernel_size,
    }
    trainer = VAE(
        build_vae_encoder(**sizes),
        build_vae_decoder(min_scale=config.min_scale, **sizes),
        student_t_dof=config.student_t_dof,
        kl_weight=config.kl_weight,
        kl_warmup_steps=config.kl_warmup_steps,
        seed=config.seed,
    )
    trainer.compile(
        optimizer=keras.optimizers.Adam(
            config.learning_rate, beta_1=config.adam_beta_1, beta_2=config.adam_beta_2
        )
    )
    return trainer


def _latent_layout(config, trainer, chunk_length):
    """Return the sizes of the code and noise parts of the generator's latent vector."""
    code_dim = int(trainer.decoder.inputs[0].shape[-1])
    noise_dim = (config.student_t_dof + 1) * chunk_length
    return {"code_dim": code_dim, "noise_dim": noise_dim}


def _fixed_latents(config, trainer, n_chunks):
    """Draw the evaluation latents: code and noise normals, (n_chunks, total) float32.

    The "location" generator reads the first ``code_dim`` columns, so both sample
    modes see the same codes.
    """
    chunk_length = int(trainer.decoder.outputs[0].shape[-1])
    layout = _latent_layout(config, trainer, chunk_length)
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, 1]))
    shape = (n_chunks, layout["code_dim"] + layout["noise_dim"])
    return rng.standard_normal(shape).astype(np.float32)


def _generator_latents(latents, sample_mode, code_dim):
    return latents if sample_mode == "location_plus_noise" else latents[:, :code_dim]


def _negative_elbo_per_sample(trainer, chunks_y, seed, batch_size=256):
    """Return the mean held-out reconstruction NLL and KL per sample, nats.

    Each code is one draw from the posterior, so the figures are one-sample Monte
    Carlo estimates of the ELBO terms. The draws come from their own seed, so
    evaluations do not change the random numbers of the training steps.
    """
    seed_generator = keras.random.SeedGenerator(seed)
    recon, kl = [], []
    for start in range(0, chunks_y.shape[0], batch_size):
        batch = ops.convert_to_tensor(chunks_y[start : start + batch_size])
        recon_nll, kl_chunk, _ = trainer.negative_elbo_terms(batch, seed_generator=seed_generator)
        recon.append(np.asarray(recon_nll))
        kl.append(np.asarray(kl_chunk))
    chunk_length = chunks_y.shape[1]
    recon_nll = float(np.mean(np.concatenate(recon)) / chunk_length)
    kl_per_sample = float(np.mean(np.concatenate(kl)) / chunk_length)
    return {"recon_nll_per_sample": recon_nll, "kl_per_sample": kl_per_sample}


class _BestSnapshot:
    """Evaluate both sample modes on fixed latents and keep the best decoder snapshot.

    Each ``evaluate(step)`` appends a row to ``eval.csv`` with the figures and
    selection score of the "location" and "location_plus_noise" generators and the
    held-out negative ELBO terms. The configured sample mode alone decides which
    snapshot is best; its decoder weights are then copied and written to
    ``checkpoints/best_decoder.weights.h5``.

    NOTE: the selection chunks are the first ``n_eval_chunks`` of the validation
    chunks that the card's final figures also use, so those figures are slightly
    optimistic for the selected snapshot.
    """

    def __init__(self, config, data, trainer, run):
        from ..models.vae import build_vae_generator

        self.config = config
        self.trainer = trainer
        self.data = data
        self.n_eval = min(config.n_eval_chunks, data["latents"].shape[0])
        self.code_dim = int(trainer.decoder.inputs[0].shape[-1])
        self.eval_csv = run["eval_csv"]
        self.best_path = os.path.join(run["checkpoint_dir"], "best_decoder.weights.h5")
        self.generators = {
            mode: build_vae_generator(trainer.decoder, mode, config.student_t_dof)
            for mode in ("location", "location_plus_noise")
        }
        self.rows = []
        self.best = None

    def evaluate(self, step):
        reference_w = self.data["validation_w"][: self.n_eval]
        latents = self.data["latents"][: self.n_eval]
        sample_rate_hz = self.data["train"].sample_rate_hz
        row = {"step": step}
        for mode, generator in self.generators.items():
            mode_latents = _generator_latents(latents, mode, self.code_dim)
            generated_w = crab_bce._generate_w(generator, mode_latents, self.data["transform"])
            figures = compare_chunks(reference_w, generated_w, sample_rate_hz)
            tail = figures["fraction_beyond_5_sigma"]
            rms = figures["rms_w"]
            row[f"{mode}_ks_samples"] = figures["ks_samples"]
            row[f"{mode}_ks_chunk_max"] = figures["ks_chunk_max"]
            row[f"{mode}_rms_ratio"] = rms["generated"] / rms["reference"]
            row[f"{mode}_tail_fraction_ratio"] = tail["generated"] / max(tail["reference"], 1e-300)
            row[f"{mode}_score"] = selection_score(figures)
        row.update(
            _negative_elbo_per_sample(
                self.trainer, self.data["val_y"][: self.n_eval], self.config.seed + 3
            )
        )

        score = row[f"{self.config.sample_mode}_score"]
        if self.best is None or score < self.best["score"]:
            self.best = {
                "step": int(step),
                "score": score,
                "weights": [np.array(w) for w in self.trainer.decoder.get_weights()],
            }
            self.trainer.decoder.save_weights(self.best_path)
        self.rows.append(row)
        crab_bce._write_rows(self.eval_csv, self.rows)

    def best_decoder(self):
        """Return a copy of the decoder with the best snapshot's weights."""
        decoder = keras.models.clone_model(self.trainer.decoder)
        decoder.set_weights(self.best["weights"])
        return decoder

    def exported_generator(self, sample_mode=None):
        """Return the generator of ``sample_mode`` (default: the configured one) on the best decoder."""
        from ..models.vae import build_vae_generator

        mode = sample_mode or self.config.sample_mode
        return build_vae_generator(self.best_decoder(), mode, self.config.student_t_dof)

    def card_entry(self, n_validation):
        return {
            "step": self.best["step"],
            "sample_mode": self.config.sample_mode,
            "score": self.best["score"],
            "n_evaluations": len(self.rows),
            "metric": (
                "ks_samples + ks_chunk_max + |log10(fraction beyond 5 sigma, generated / "
                "validation MC, floored at 1e-3)| of the configured sample mode on the "
                f"first {self.n_eval} fixed latents and validation chunks at every "
                "evaluation; the lowest score is exported"
            ),
            "caveat": (
                f"the {self.n_eval} selection chunks are among the {n_validation} chunks of "
                "the validation figures, so those figures are slightly optimistic"
            ),
        }


def _validate(config, data, trainer, exported, selector):
    """Measure the exported generator, the other sample mode and the last weights.

    Returns:
        (tuple): The card's ``validation`` entry and the exported generator's
        chunks, (n_chunks, chunk_length) float64, W.
    """
    from ..models.vae import build_vae_generator

    sample_rate_hz = data["train"].sample_rate_hz
    validation_w = data["validation_w"]
    transform = data["transform"]
    code_dim = selector.code_dim
    mode = config.sample_mode
    other_mode = "location" if mode == "location_plus_noise" else "location_plus_noise"
    generated_w = crab_bce._generate_w(
        exported, _generator_latents(data["latents"], mode, code_dim), transform
    )
    other_w = crab_bce._generate_w(
        selector.exported_generator(other_mode),
        _generator_latents(data["latents"], other_mode, code_dim),
        transform,
    )
    last_generator = build_vae_generator(trainer.decoder, mode, config.student_t_dof)
    last_w = crab_bce._generate_w(
        last_generator, _generator_latents(data["latents"], mode, code_dim), transform
    )
    n_validation = validation_w.shape[0]

    # MC-vs-MC figures give the scale of sampling differences between MC runs.
    baseline_rng = np.random.default_rng(np.random.SeedSequence([config.seed, 2]))
    n_baseline = min(n_validation, data["train"].n_chunks)
    baseline_index = np.sort(
        baseline_rng.choice(data["train"].n_chunks, size=n_baseline, replace=False)
    )

    validation = {
        "method": (
            "held-out validation chunks (whole MC runs, first n_chunks of the split) "
            "vs the same number of generated chunks from fixed latents "
            f"(SeedSequence([{config.seed}, 1])); 'reference' is the validation MC"
        ),
        "generator": f"{mode} at step {selector.best['step']}",
        "figures": compare_chunks(validation_w, generated_w, sample_rate_hz),
        "other_sample_mode": {
            "generator": f"{other_mode} at step {selector.best['step']}",
            "figures": compare_chunks(validation_w, other_w, sample_rate_hz),
        },
        "last_weights": {
            "generator": f"{mode} at step {config.steps}",
            "figures": compare_chunks(validation_w, last_w, sample_rate_hz),
        },
        "negative_elbo_last_weights": {
            "method": (
                "mean reconstruction NLL and KL per sample of the validation chunks in "
                "network space, one posterior draw per chunk"
            ),
            **_negative_elbo_per_sample(trainer, data["val_y"][:n_validation], config.seed + 3),
        },
        "mc_vs_mc": {
            "method": "the same figures for training-split MC chunks vs the validation MC chunks",
            "figures": compare_chunks(
                validation_w[:n_baseline], data["train"].chunks[baseline_index], sample_rate_hz
            ),
        },
    }
    return validation, generated_w


def _plot_evaluation(eval_log, title, path):
    import matplotlib.pyplot as plt

    fig, (ks_axis, ratio_axis) = plt.subplots(1, 2, figsize=(12, 4.2))
    styles = {"location_plus_noise": ("C0", "-"), "location": ("C1", "--")}
    for mode, (color, line) in styles.items():
        ks_axis.plot(
            eval_log["step"], eval_log[f"{mode}_ks_samples"], "o" + line, color=color,
            label=f"{mode}: samples",
        )
        ks_axis.plot(
            eval_log["step"], eval_log[f"{mode}_ks_chunk_max"], "s" + line, color=color,
            alpha=0.5, label=f"{mode}: chunk maxima",
        )
        ratio_axis.plot(
            eval_log["step"], eval_log[f"{mode}_rms_ratio"], "^" + line, color=color,
            label=f"{mode}: RMS",
        )
        ratio_axis.plot(
            eval_log["step"], eval_log[f"{mode}_tail_fraction_ratio"], "v" + line, color=color,
            alpha=0.5, label=f"{mode}: fraction beyond 5 sigma",
        )
    ks_axis.set_ylim(0, 1)
    ks_axis.set_ylabel("KS statistic (0 = same distribution)")
    ratio_axis.axhline(1.0, color="0.5", lw=0.8)
    ratio_axis.set_yscale("log")
    ratio_axis.set_ylabel("ratio generated / validation MC")
    for axis in (ks_axis, ratio_axis):
        axis.set_xlabel("training step")
        axis.grid(alpha=0.3)
        axis.legend(fontsize="small")
    fig.suptitle(f"{title}: both sample modes vs validation MC during training")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_reconstructions(data, trainer, title, path, n_rows=4):
    """Plot validation chunks with the decoder location of their posterior mean."""
    import matplotlib.pyplot as plt

    from .plots import _pick_examples

    chunks_w = _pick_examples(data["validation_w"], n_rows)
    transform = data["transform"]
    loc_y = np.asarray(trainer.predict_on_batch(transform.forward(chunks_w).astype(np.float32)))
    loc_w = transform.inverse(loc_y)
    time_s = np.arange(chunks_w.shape[1]) / data["train"].sample_rate_hz
    fig, axes = plt.subplots(chunks_w.shape[0], 1, figsize=(11, 1.9 * chunks_w.shape[0] + 0.6),
                             sharex=True)
    axes = np.atleast_1d(axes)
    for axis, chunk_w, recon_w in zip(axes, chunks_w, loc_w):
        axis.plot(time_s, chunk_w, lw=0.6, color="C0", label="validation MC")
        axis.plot(time_s, recon_w, lw=0.8, color="C3", label="decoder location of mean code")
        axis.set_ylabel("power [W]")
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize="small")
    axes[-1].set_xlabel("time [s]")
    fig.suptitle(f"{title}: reconstructions, last weights (rows 1-2 largest peak)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_vae_run(run, data, trainer, selector, generated_w, title):
    """Write the PNG plots of one VAE run and return their paths.

    Args:
        run (dict): Paths of the run (``log_csv``, ``eval_csv``, ``plot_dir``).
        data (dict): ``validation_w`` (n_chunks, chunk_length) float64, W; ``train``
            (its sample rate) and ``transform`` (its ``scale_w``).
        trainer (VAE): The trained model (last weights), for the reconstructions.
        selector (_BestSnapshot): The evaluation rows.
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
            log, ["loss", "negative_elbo", "recon_nll", "kl"], "nats per chunk",
            f"{title}: loss (NLL + beta KL), negative ELBO, reconstruction NLL and KL",
            os.path.join(out_dir, "losses.png"),
        ),
        plots._plot_curves(
            log, ["kl_weight", "scale_mean"], "beta; network-space units",
            f"{title}: KL weight beta and mean decoder scale",
            os.path.join(out_dir, "kl_weight_scale.png"),
        ),
    ]
    paths += plots.plot_sample_comparison(
        validation_w, generated_w, sample_rate_hz, data["transform"].scale_w, title, out_dir
    )
    paths.append(
        _plot_reconstructions(data, trainer, title, os.path.join(out_dir, "reconstructions.png"))
    )
    if selector.rows:
        paths.append(
            _plot_evaluation(
                plots.read_log(run["eval_csv"]), title, os.path.join(out_dir, "evaluation.png")
            )
        )
    return paths


def _make_card(config, data, trainer, timing, validation, selector):
    from .. import __version__
    from ..bundle import CARD_SCHEMA, CARD_SCHEMA_VERSION

    chunk_length = int(data["train"].chunk_length)
    layout = _latent_layout(config, trainer, chunk_length)
    if config.sample_mode == "location_plus_noise":
        latent_dim_total = layout["code_dim"] + layout["noise_dim"]
        latent_layout = (
            f"entries [0, {layout['code_dim']}): latent code, reshaped to "
            f"({layout['code_dim'] // config.latent_channels}, {config.latent_channels}); "
            f"entries [{layout['code_dim']}, {latent_dim_total}): Student-t noise normals, "
            f"reshaped to ({config.student_t_dof + 1}, {chunk_length}), row 0 numerators, "
            f"rows 1-{config.student_t_dof} chi-square normals"
        )
        sample = "decoder location + decoder scale * Student-t noise from the latent normals"
    else:
        latent_dim_total = layout["code_dim"]
        latent_layout = (
            f"latent code, reshaped to ({layout['code_dim'] // config.latent_channels}, "
            f"{config.latent_channels})"
        )
        sample = "decoder location of the latent code, no likelihood noise"
    n_validation = data["validation_w"].shape[0]
    training = {
        "recipe": (
            "VAE with a Student-t likelihood and KL warm-up, Kingma and Welling 2014 "
            "(toast_crab.training.vae)"
        ),
        "settings": config.to_toml_dict(),
        "seed": config.seed,
        "steps": int(config.steps),
        "sample_mode": config.sample_mode,
        "sample": sample,
        "student_t_dof": int(config.student_t_dof),
        "latent_layout": latent_layout,
        "code_dim": layout["code_dim"],
        "exported_step": selector.best["step"],
        "selection": selector.card_entry(n_validation),
        "encoder_params": int(trainer.encoder.count_params()),
        "decoder_params": int(trainer.decoder.count_params()),
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
    return {
        "schema": CARD_SCHEMA,
        "schema_version": CARD_SCHEMA_VERSION,
        "name": config.name,
        "description": config.description,
        "family": FAMILY,
        "sample_rate_hz": float(data["train"].sample_rate_hz),
        "chunk_length": chunk_length,
        "output_unit": "W",
        "transform": data["transform"].to_card(),
        "latent_shape": [int(latent_dim_total)],
        "latent_distribution": "standard normal, float32",
        "conditioning": {},
        "training_data": crab_bce._training_data_entry(config, data),
        "training": training,
        "validation": validation,
    }
