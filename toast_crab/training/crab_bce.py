"""The original CRAB training recipe: a binary cross-entropy GAN.

The recipe follows CRAB (INFN Milano-Bicocca, 2024). It trains with binary
cross-entropy and one-sided label smoothing on the real labels. Instance noise is
added to the discriminator inputs, and a weight scales the generated-sample term of
the discriminator loss. Optional extra discriminator steps run per generator step,
and a discriminator pre-training phase comes before the adversarial phase. The
generator uses the non-saturating loss ``-log D(G(z))``. An exponential moving
average (EMA) of the generator weights is kept beside the trained weights. At every
evaluation both generators are diagnosed against fixed validation chunks
(:mod:`toast_crab.training.diagnostics`). The config chooses what is exported: the
snapshot with the lowest checkpoint score (``best``), or the last EMA or raw weights.

The networks see chunks in the space of one global amplitude transform,
``y = asinh(x / scale_w)``, where ``scale_w`` is a robust standard deviation of all
training samples.
"""

import csv
import hashlib
import json
import os
import platform
import subprocess
import time
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf
from keras import ops
from scipy import signal, stats
from tensorflow.core.framework import summary_pb2
from tqdm.auto import tqdm

from . import diagnostics
from .adversarial import AdversarialTrainer
from .config import TomlConfig

__all__ = [
    "CrabBCE",
    "CrabBCEConfig",
    "FAMILY",
    "compare_chunks",
    "make_training_dataset",
    "robust_sigma",
    "train_crab_bce",
]

FAMILY = "crab_bce"

# 1.4826 = 1 / Phi^-1(0.75), so 1.4826 * MAD estimates the standard deviation of
# Gaussian data.
_MAD_TO_SIGMA = 1.4826

# Threshold, in robust standard deviations, that separates glitch samples from the
# continuum in the validation figures.
_TAIL_SIGMA = 5.0

# Samples at each end of a chunk counted as "edge" when locating chunk maxima.
_EDGE_SAMPLES = 10

# Values of ``export_generator``: the snapshot (raw or EMA, any evaluation step)
# with the lowest checkpoint score, or the last EMA or raw weights.
EXPORT_CHOICES = ("best", "ema", "raw")


@dataclass(frozen=True)
class CrabBCEConfig(TomlConfig):
    """Settings of one ``crab_bce`` training run.

    The TOML config groups the fields in tables: top level (``family``, ``name``,
    ``description``, ``seed``), ``[data]``, ``[model]``, ``[training]`` and
    ``[output]``. See ``configs/crab_bce.toml`` for a commented example. Relative
    paths resolve against the current working directory.
    """

    # top level
    name: str = "crab_model"
    description: str = ""
    seed: int = 1234
    # [data]
    data_path: str = ""
    validation_fraction: float = 0.1
    # [model]
    latent_dim: int = 100
    # [training]
    batch_size: int = 64
    pretrain_epochs: int = 1
    pretrain_steps: int = 0
    steps: int = 6000
    g_learning_rate: float = 2e-4
    d_learning_rate: float = 2e-4
    adam_beta_1: float = 0.5
    adam_beta_2: float = 0.999
    real_label_smoothing: float = 0.1
    instance_noise_std: float = 0.1
    instance_noise_anneal_steps: int = 3000
    synthetic_weight: float = 1.0
    d_steps: int = 1
    ema_decay: float = 0.999
    export_generator: str = "best"
    # [output]
    out_dir: str = "out/crab_bce"
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
        "model": {"latent_dim": "latent_dim"},
        "training": {
            key: key
            for key in (
                "batch_size",
                "pretrain_epochs",
                "pretrain_steps",
                "steps",
                "g_learning_rate",
                "d_learning_rate",
                "adam_beta_1",
                "adam_beta_2",
                "real_label_smoothing",
                "instance_noise_std",
                "instance_noise_anneal_steps",
                "synthetic_weight",
                "d_steps",
                "ema_decay",
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
        self._check_types()
        self._check_values()

    def _check_values(self):
        positive = (
            "latent_dim", "batch_size", "steps", "g_learning_rate", "d_learning_rate",
            "synthetic_weight", "d_steps", "checkpoint_interval", "eval_interval",
            "n_eval_chunks", "n_validation_chunks",
        )
        for key in positive:
            if not getattr(self, key) > 0:
                raise ValueError(
                    f"crab_bce config entry {key!r} must be positive. Got {getattr(self, key)!r}."
                )
        non_negative = (
            "pretrain_epochs", "pretrain_steps", "instance_noise_std",
            "instance_noise_anneal_steps",
        )
        for key in non_negative:
            if getattr(self, key) < 0:
                raise ValueError(
                    f"crab_bce config entry {key!r} must be >= 0. Got {getattr(self, key)!r}."
                )
        unit_interval = ("adam_beta_1", "adam_beta_2", "real_label_smoothing", "ema_decay")
        for key in unit_interval:
            if not 0.0 <= getattr(self, key) < 1.0:
                raise ValueError(
                    f"crab_bce config entry {key!r} must be in [0, 1). Got {getattr(self, key)!r}."
                )
        if self.pretrain_epochs > 0 and self.pretrain_steps > 0:
            raise ValueError(
                f"crab_bce config sets both pretrain_epochs ({self.pretrain_epochs}) and "
                f"pretrain_steps ({self.pretrain_steps}); set one of them and the other to 0."
            )
        if not 0.0 < self.validation_fraction < 1.0:
            raise ValueError(
                f"crab_bce config entry 'validation_fraction' must be in (0, 1). "
                f"Got {self.validation_fraction!r}."
            )
        if self.export_generator not in EXPORT_CHOICES:
            raise ValueError(
                f"crab_bce config entry 'export_generator' must be one of "
                f"{list(EXPORT_CHOICES)}. Got {self.export_generator!r}."
            )
        if not self.data_path:
            raise ValueError(
                "crab_bce config has no training set: set [data] path in the TOML or "
                "pass --data PATH."
            )


def robust_sigma(x):
    """Return 1.4826 times the median absolute deviation from the median.

    Args:
        x (array): Samples of any shape; flattened.

    Returns:
        (float): Robust standard deviation, in the unit of ``x``.
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    return float(_MAD_TO_SIGMA * np.median(np.abs(x - np.median(x))))


def make_training_dataset(chunks_y, batch_size, seed):
    """Build the shuffled, repeated ``tf.data`` pipeline of training chunks.

    Args:
        chunks_y (array): (n_chunks, chunk_length) float32, network space.
        batch_size (int): Chunks per batch; the last incomplete batch of each pass
            is dropped.
        seed (int): Seed of the shuffle.

    Returns:
        (tf.data.Dataset): Endless batches of (batch_size, chunk_length) float32.

    Raises:
        ValueError: If there are fewer chunks than one batch.
    """
    n_chunks = int(chunks_y.shape[0])
    if n_chunks < batch_size:
        raise ValueError(
            f"The training split has {n_chunks} chunks, fewer than one batch of "
            f"{batch_size}. Lower batch_size or use a larger training set."
        )
    dataset = tf.data.Dataset.from_tensor_slices(np.asarray(chunks_y, dtype=np.float32))
    dataset = dataset.shuffle(n_chunks, seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.repeat().batch(batch_size, drop_remainder=True)
    return dataset.prefetch(tf.data.AUTOTUNE)


class CrabBCE(AdversarialTrainer):
    """Generator and discriminator trained with the CRAB binary cross-entropy recipe.

    Each ``train_step`` makes ``d_steps`` discriminator updates on the same real
    batch (fresh latents and instance noise each time), then one generator
    update with the non-saturating loss, then one EMA update. With
    ``pretraining = True`` it makes the discriminator updates only; change the
    flag between ``fit`` calls and reset ``train_function`` to ``None``.

    Discriminator loss: ``BCE(1 - s, D(x + n)) + w * BCE(0, D(G(z) + n))`` with
    label smoothing ``s``, synthetic weight ``w`` and instance noise ``n`` of
    standard deviation ``sigma_t = sigma_0 * max(0, 1 - t / T)`` after ``t``
    generator updates (constant when ``T`` is 0). Generator loss:
    ``BCE(1, D(G(z) + n))``.

    Args:
        generator (keras.Model): Latent (batch, latent_dim) to chunk
            (batch, chunk_length).
        discriminator (keras.Model): Chunk to logit (batch, 1).
        real_label_smoothing (float): ``s``, in [0, 1).
        instance_noise_std (float): ``sigma_0``, network-space units.
        instance_noise_anneal_steps (int): ``T``, generator updates.
        synthetic_weight (float): ``w``.
        d_steps (int): Discriminator updates per generator update.
        ema_decay (float): Decay of the EMA generator; the decay used at
            update ``t`` is ``min(ema_decay, (1 + t) / (10 + t))``.
        seed (int): Seed of the model's ``SeedGenerator`` (latents, noise).

    Limitations:
        Extra discriminator steps reuse the real batch of the step rather than
        drawing new real chunks.
    """

    def __init__(
        self,
        generator,
        discriminator,
        real_label_smoothing=0.1,
        instance_noise_std=0.1,
        instance_noise_anneal_steps=0,
        synthetic_weight=1.0,
        d_steps=1,
        ema_decay=0.999,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.generator = generator
        self.discriminator = discriminator
        self.ema_generator = keras.models.clone_model(generator)
        self.ema_generator.set_weights(generator.get_weights())
        self.latent_dim = int(generator.inputs[0].shape[-1])
        self.real_label_smoothing = float(real_label_smoothing)
        self.instance_noise_std = float(instance_noise_std)
        self.instance_noise_anneal_steps = int(instance_noise_anneal_steps)
        self.synthetic_weight = float(synthetic_weight)
        self.d_steps = int(d_steps)
        self.ema_decay = float(ema_decay)
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.pretraining = False
        self.built = True

    def _opponent(self):
        return self.discriminator

    def call(self, latent, training=False):
        return self.generator(latent, training=training)

    def current_noise_std(self):
        """Return the instance-noise standard deviation for the next update."""
        sigma = ops.convert_to_tensor(self.instance_noise_std, dtype="float32")
        if self.instance_noise_anneal_steps <= 0:
            return sigma
        done = ops.cast(self.g_optimizer.iterations, "float32")
        left = 1.0 - done / float(self.instance_noise_anneal_steps)
        return sigma * ops.maximum(left, 0.0)

    def _noisy(self, chunks, sigma):
        noise = keras.random.normal(ops.shape(chunks), seed=self.seed_generator)
        return chunks + sigma * noise

    def _latents(self, batch_size):
        return keras.random.normal((batch_size, self.latent_dim), seed=self.seed_generator)

    def _discriminator_step(self, real, sigma):
        batch_size = ops.shape(real)[0]
        fake = self.generator(self._latents(batch_size), training=True)
        real_in = self._noisy(real, sigma)
        fake_in = self._noisy(fake, sigma)
        real_target = ops.full((batch_size, 1), 1.0 - self.real_label_smoothing)
        fake_target = ops.zeros((batch_size, 1))
        with tf.GradientTape() as tape:
            real_logits = self.discriminator(real_in, training=True)
            fake_logits = self.discriminator(fake_in, training=True)
            loss_real = ops.mean(
                keras.losses.binary_crossentropy(real_target, real_logits, from_logits=True)
            )
            loss_fake = ops.mean(
                keras.losses.binary_crossentropy(fake_target, fake_logits, from_logits=True)
            )
            d_loss = loss_real + self.synthetic_weight * loss_fake
        weights = self.discriminator.trainable_variables
        self.d_optimizer.apply_gradients(zip(tape.gradient(d_loss, weights), weights))
        return d_loss, real_logits, fake_logits

    def _generator_step(self, batch_size, sigma):
        latents = self._latents(batch_size)
        with tf.GradientTape() as tape:
            fake = self.generator(latents, training=True)
            fake_logits = self.discriminator(self._noisy(fake, sigma), training=True)
            g_loss = ops.mean(
                keras.losses.binary_crossentropy(
                    ops.ones_like(fake_logits), fake_logits, from_logits=True
                )
            )
        weights = self.generator.trainable_variables
        self.g_optimizer.apply_gradients(zip(tape.gradient(g_loss, weights), weights))
        return g_loss

    def train_step(self, data):
        real = ops.convert_to_tensor(data, dtype="float32")
        batch_size = ops.shape(real)[0]
        sigma = self.current_noise_std()

        for _ in range(self.d_steps):
            d_loss, real_logits, fake_logits = self._discriminator_step(real, sigma)

        if self.pretraining:
            # No update: the loss the generator would have on the last fakes.
            g_loss = ops.mean(
                keras.losses.binary_crossentropy(
                    ops.ones_like(fake_logits), fake_logits, from_logits=True
                )
            )
        else:
            g_loss = self._generator_step(batch_size, sigma)
            self._update_ema()

        return {
            "d_loss": d_loss,
            "g_loss": g_loss,
            "d_acc_real": ops.mean(ops.cast(real_logits > 0.0, "float32")),
            "d_acc_fake": ops.mean(ops.cast(fake_logits < 0.0, "float32")),
            "d_real": ops.mean(ops.sigmoid(real_logits)),
            "d_fake": ops.mean(ops.sigmoid(fake_logits)),
            "instance_noise_std": sigma,
        }


# ---------------------------------------------------------------------------------
# Validation figures


def _count_excursions(chunks_w, center_w, threshold_w):
    """Count runs of consecutive samples with |x - center| > threshold, per chunk."""
    above = np.abs(chunks_w - center_w) > threshold_w
    starts = above[:, 1:] & ~above[:, :-1]
    return above[:, 0].astype(np.int64) + starts.sum(axis=1)


def _max_at_edge_fraction(chunks_w):
    """Return the fraction of chunks whose maximum lies within the edge samples."""
    position = np.argmax(chunks_w, axis=1)
    at_edge = (position < _EDGE_SAMPLES) | (position >= chunks_w.shape[1] - _EDGE_SAMPLES)
    return float(np.mean(at_edge))


def _band_power(chunks_w, sample_rate_hz, bands_hz):
    nperseg = min(256, chunks_w.shape[1])
    freq_hz, psd = signal.welch(chunks_w, fs=sample_rate_hz, nperseg=nperseg, axis=-1)
    mean_psd = psd.mean(axis=0)
    return [float(mean_psd[(freq_hz >= lo) & (freq_hz < hi)].mean()) for lo, hi in bands_hz]


def compare_chunks(reference_w, generated_w, sample_rate_hz):
    """Compare two sets of chunks with cheap distribution and spectrum figures.

    The continuum level and the tail threshold come from ``reference_w``: the
    threshold is 5 robust standard deviations (1.4826 MAD) around its median, and
    both sets are measured against that same threshold. ``large_max_fraction`` is
    the fraction of chunks whose maximum exceeds the 90th percentile of the
    reference chunk maxima (0.1 for the reference). ``max_at_edge_fraction`` is
    the fraction of chunks whose maximum lies within 10 samples of either end
    (about 0.02 when maxima are placed uniformly).

    Args:
        reference_w (array): (n_ref, chunk_length) float64, W. Usually held-out MC.
        generated_w (array): (n_gen, chunk_length) float64, W.
        sample_rate_hz (float): Sample rate of both sets.

    Returns:
        (dict): Per figure ``{"reference": value, "generated": value}`` entries, plus
        ``ks_samples`` (two-sample Kolmogorov-Smirnov statistic of all samples),
        ``ks_chunk_max`` (the same for the per-chunk maxima) and
        ``psd_log10_ratio`` (log10 of generated over reference mean Welch PSD in
        four frequency bands). KS p-values are left out because samples within a
        chunk are correlated.
    """
    reference_w = np.asarray(reference_w, dtype=np.float64)
    generated_w = np.asarray(generated_w, dtype=np.float64)
    center_w = float(np.median(reference_w))
    sigma_w = robust_sigma(reference_w)
    large_max_w = float(np.quantile(reference_w.max(axis=1), 0.9))
    threshold_w = _TAIL_SIGMA * sigma_w
    nyquist_hz = 0.5 * sample_rate_hz
    lowest_hz = sample_rate_hz / min(256, reference_w.shape[1])
    edges_hz = np.geomspace(lowest_hz, nyquist_hz * 1.0001, 5)
    bands_hz = list(zip(edges_hz[:-1], edges_hz[1:]))

    result = {
        "n_chunks": {"reference": int(reference_w.shape[0]), "generated": int(generated_w.shape[0])},
        "tail_threshold_w": threshold_w,
        "large_max_threshold_w": large_max_w,
    }
    for label, chunks in (("reference", reference_w), ("generated", generated_w)):
        excursions = _count_excursions(chunks, center_w, threshold_w)
        values = {
            "mean_w": float(chunks.mean()),
            "rms_w": float(np.sqrt(np.mean(chunks**2))),
            "std_w": float(chunks.std()),
            "robust_sigma_w": robust_sigma(chunks),
            "fraction_beyond_5_sigma": float(np.mean(np.abs(chunks - center_w) > threshold_w)),
            "excursions_per_chunk": float(excursions.mean()),
            "excursion_fano_factor": float(excursions.var() / max(excursions.mean(), 1e-300)),
            "quantile_0.1pct_w": float(np.quantile(chunks, 0.001)),
            "quantile_1pct_w": float(np.quantile(chunks, 0.01)),
            "median_w": float(np.median(chunks)),
            "quantile_99pct_w": float(np.quantile(chunks, 0.99)),
            "quantile_99.9pct_w": float(np.quantile(chunks, 0.999)),
            "max_w": float(chunks.max()),
            "min_w": float(chunks.min()),
            "large_max_fraction": float(np.mean(chunks.max(axis=1) > large_max_w)),
            "max_at_edge_fraction": _max_at_edge_fraction(chunks),
        }
        for key, value in values.items():
            result.setdefault(key, {})[label] = value

    result["ks_samples"] = float(stats.ks_2samp(reference_w.ravel(), generated_w.ravel()).statistic)
    result["ks_chunk_max"] = float(
        stats.ks_2samp(reference_w.max(axis=1), generated_w.max(axis=1)).statistic
    )
    ref_power = _band_power(reference_w, sample_rate_hz, bands_hz)
    gen_power = _band_power(generated_w, sample_rate_hz, bands_hz)
    result["psd_log10_ratio"] = {
        f"{lo:.3g}-{hi:.3g} Hz": float(np.log10(g / r)) if r > 0 and g > 0 else None
        for (lo, hi), r, g in zip(bands_hz, ref_power, gen_power)
    }
    return result


# ---------------------------------------------------------------------------------
# Training run


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _git_commit():
    package_dir = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=package_dir, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _machine_description():
    gpus = tf.config.list_physical_devices("GPU")
    accel = f"{len(gpus)} GPU" if gpus else "no GPU"
    return f"{os.cpu_count()}-core CPU, {accel} ({platform.machine()}, {platform.system()})"


def _generate_w(generator, latents, transform, batch_size=512):
    """Run a generator on fixed latents and map the output to watts, float64."""
    outputs = []
    for start in range(0, latents.shape[0], batch_size):
        y = generator.predict_on_batch(latents[start : start + batch_size])
        outputs.append(np.asarray(y, dtype=np.float64).reshape(y.shape[0], -1))
    return transform.inverse(np.concatenate(outputs, axis=0))


def _discriminator_response(discriminator, chunks_y, batch_size=512):
    logits = [
        np.asarray(discriminator.predict_on_batch(chunks_y[i : i + batch_size]))
        for i in range(0, chunks_y.shape[0], batch_size)
    ]
    return float(np.mean(1.0 / (1.0 + np.exp(-np.concatenate(logits)))))


# TensorBoard's scalar plugin reads summaries tagged with this metadata. Writing them
# with tf.summary.write avoids tf.summary.scalar, which needs the separate
# tensorboard package (TensorFlow 2.21 no longer installs it).
_SCALAR_METADATA = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars")
)


def _write_scalar_summary(tag, value):
    tf.summary.write(tag, tf.constant(value, dtype=tf.float32), metadata=_SCALAR_METADATA)


class _StepLogger(keras.callbacks.Callback):
    """Log every step to CSV and TensorBoard, show progress, checkpoint and evaluate.

    Args:
        run (dict): Paths, step counts, intervals and the ``evaluate(step)``
            function of the training run.
        progress (bool): Show a tqdm progress bar.
    """

    def __init__(self, run, progress=True):
        super().__init__()
        self.run = run
        self.step = 0
        self.phase = "pretrain"
        self.step_ms = []
        self.writer = tf.summary.create_file_writer(run["tensorboard_dir"])
        self.handle = open(run["log_csv"], "w", newline="", encoding="utf-8")
        self.csv = None
        self.bar = tqdm(
            total=run["total_steps"], desc="crab-train", unit="step", disable=not progress
        )

    def on_train_batch_begin(self, batch, logs=None):
        self.started = time.perf_counter()

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
                phase=self.phase,
                d_loss=f"{row['d_loss']:.3f}",
                g_loss=f"{row['g_loss']:.3f}",
                d_real=f"{row['d_real']:.2f}",
                d_fake=f"{row['d_fake']:.2f}",
            )
            self.handle.flush()

        if self.phase != "adversarial":
            return
        adversarial_step = self.step - self.run["pretrain_steps"]
        if adversarial_step % self.run["checkpoint_interval"] == 0:
            name = f"step_{adversarial_step:07d}.weights.h5"
            self.model.save_weights(os.path.join(self.run["checkpoint_dir"], name))
        if adversarial_step % self.run["eval_interval"] == 0:
            row = self.run["evaluate"](adversarial_step)
            _write_eval_scalars(self.writer, row)

    def _write_row(self, row):
        if self.csv is None:
            self.csv = csv.DictWriter(self.handle, fieldnames=list(row))
            self.csv.writeheader()
        self.csv.writerow(row)
        with self.writer.as_default(step=self.step):
            for key, value in row.items():
                if key not in ("step", "phase"):
                    _write_scalar_summary(key, value)

    def close(self):
        self.bar.close()
        self.handle.close()
        self.writer.flush()
        self.writer.close()


def _prepare_data(config):
    """Read, split and transform the training set; return a dict of arrays and facts."""
    from ..datasets import read_training_set, split_by_run
    from ..transforms import AsinhTransform

    training_set = read_training_set(config.data_path)
    train_set, val_set = split_by_run(training_set, config.validation_fraction, config.seed)
    scale_w = robust_sigma(train_set.chunks)
    if not (np.isfinite(scale_w) and scale_w > 0):
        raise ValueError(
            f"The robust standard deviation of the training samples is {scale_w!r} W, so "
            "the asinh transform has no scale. More than half of the samples are equal; "
            "train on chunks with a continuum (add detector or wafer noise in the MC)."
        )
    transform = AsinhTransform(scale_w)
    return {
        "set": training_set,
        "train": train_set,
        "val": val_set,
        "transform": transform,
        "train_y": transform.forward(train_set.chunks).astype(np.float32),
        "val_y": transform.forward(val_set.chunks).astype(np.float32),
    }


def _training_data_entry(config, data):
    run_ids = data["set"].labels["run_id"]
    return {
        "path": os.path.abspath(config.data_path),
        "sha256": _sha256(config.data_path),
        "n_chunks": int(data["set"].n_chunks),
        "n_chunks_train": int(data["train"].n_chunks),
        "n_chunks_validation": int(data["val"].n_chunks),
        "n_runs": int(np.unique(run_ids).size),
        "n_runs_train": int(np.unique(data["train"].labels["run_id"]).size),
        "n_runs_validation": int(np.unique(data["val"].labels["run_id"]).size),
        "split": f"split_by_run(validation_fraction={config.validation_fraction}, seed={config.seed})",
        "provenance": data["set"].provenance,
    }


def train_crab_bce(config, progress=True):
    """Train a CRAB generator with the BCE recipe and write logs, plots and a bundle.

    Outputs under ``config.out_dir``:

    * ``log.csv``: one row per step with the phase, every loss and metric, and the
      step time in ms.
    * ``eval.csv``: figures, diagnostics and checkpoint score of the raw and the
      EMA generator on fixed latents, every ``eval_interval`` adversarial steps and
      at the end (:mod:`toast_crab.training.diagnostics`).
    * ``tensorboard/``: the per-step scalars, and the evaluation rows under
      ``eval/``, as TensorBoard events.
    * ``checkpoints/step_*.weights.h5``: trainer weights, with both optimizers.
    * ``plots/*.png`` (``diagnostics.png`` among them), ``config.json`` (the
      resolved settings) and ``card.json``.

    The bundle goes to ``config.resolved_bundle_path()``. It holds the generator
    chosen by ``config.export_generator``; the card's ``training`` entry records
    which snapshot (``exported_generator``, ``exported_step``) and why
    (``selection``).

    Args:
        config (CrabBCEConfig): The run settings.
        progress (bool): Show a tqdm progress bar.

    Returns:
        (dict): ``bundle`` (keras path), ``card`` (the model card), ``out_dir``,
        ``log_csv``, ``plots`` (list of PNG paths of the training curves and
        samples) and ``diagnostics_plot`` (path of ``diagnostics.png``).

    Raises:
        TypeError: If ``config`` is not a ``CrabBCEConfig``.
        FileNotFoundError: If the training set does not exist.
        ValueError: If the training set cannot be split or scaled.
    """
    if not isinstance(config, CrabBCEConfig):
        raise TypeError(f"config must be a CrabBCEConfig. Got {type(config).__name__}.")
    if not os.path.isfile(config.data_path):
        raise FileNotFoundError(
            f"Training set {config.data_path!r} not found. Make one with "
            "`crab-mc --config examples/mc_default.toml --n-chunks 20000 --n-runs 100 "
            f"--out {config.data_path}` or pass --data PATH."
        )
    from ..bundle import save_bundle
    from . import plots

    wall_start = time.perf_counter()
    keras.utils.set_random_seed(config.seed)
    data = _prepare_data(config)
    steps_per_epoch = data["train"].n_chunks // config.batch_size
    pretrain_steps = config.pretrain_steps or config.pretrain_epochs * steps_per_epoch
    dataset = make_training_dataset(data["train_y"], config.batch_size, config.seed)
    trainer = _build_trainer(config, data["train"].chunk_length)
    run = _prepare_run(config, pretrain_steps)

    # Fixed latents and validation chunks for the periodic and final evaluation.
    latent_rng = np.random.default_rng(np.random.SeedSequence([config.seed, 1]))
    n_validation = min(config.n_validation_chunks, data["val"].n_chunks)
    data["validation_w"] = data["val"].chunks[:n_validation]
    data["latents"] = latent_rng.standard_normal((n_validation, config.latent_dim)).astype(
        np.float32
    )
    evaluator = _SnapshotEvaluator(config, data, trainer, run["eval_csv"])
    run["evaluate"] = evaluator.evaluate

    logger = _StepLogger(run, progress=progress)
    train_start = time.perf_counter()
    try:
        _fit_phases(trainer, dataset, pretrain_steps, config.steps, logger)
    finally:
        logger.close()
    train_seconds = time.perf_counter() - train_start
    trainer.save_weights(os.path.join(run["checkpoint_dir"], "final.weights.h5"))
    if not evaluator.rows or evaluator.rows[-1]["step"] != config.steps:
        write_final_eval_row(run, evaluator.evaluate(config.steps))

    exported, validation, generated_w, diagnosis = _validate(config, data, trainer, evaluator)
    plot_paths = plots.plot_training_run(
        log_csv=run["log_csv"],
        eval_csv=run["eval_csv"],
        validation_w=data["validation_w"],
        generated_w=generated_w,
        sample_rate_hz=data["train"].sample_rate_hz,
        scale_w=data["transform"].scale_w,
        out_dir=run["plot_dir"],
        title=config.name,
    )
    diagnostics_plot = plot_diagnostics_run(run, evaluator, diagnosis, config.name)

    timing = {
        "steps_per_epoch": int(steps_per_epoch),
        "pretrain_steps": int(pretrain_steps),
        "train_loop_time_s": float(train_seconds),
        "adversarial_step_ms_median": _median_ms(logger.step_ms, "adversarial"),
        "pretrain_step_ms_median": _median_ms(logger.step_ms, "pretrain"),
    }
    card = _make_card(config, data, trainer, timing, validation, evaluator)
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


def write_final_eval_row(run, row):
    """Write an evaluation row made after training to TensorBoard."""
    writer = tf.summary.create_file_writer(run["tensorboard_dir"])
    _write_eval_scalars(writer, row)
    writer.flush()
    writer.close()


def plot_diagnostics_run(run, evaluator, diagnosis, title):
    """Write ``diagnostics.png``: the exported generator's distance distributions
    on the validation chunks and the checkpoint score of both generators over steps.

    Returns:
        (str): Path of the PNG.
    """
    rows = evaluator.rows
    steps = np.array([row["step"] for row in rows], dtype=np.float64)
    history = {
        label: (steps, np.array([row[f"{label}_score"] for row in rows], dtype=np.float64))
        for label in ("raw", "ema")
    }
    return diagnostics.plot_diagnostics(
        diagnosis,
        os.path.join(run["plot_dir"], "diagnostics.png"),
        history=history,
        title=title,
    )


def _build_trainer(config, chunk_length):
    from ..models import build_crab_discriminator, build_crab_generator

    trainer = CrabBCE(
        build_crab_generator(config.latent_dim, chunk_length),
        build_crab_discriminator(chunk_length),
        real_label_smoothing=config.real_label_smoothing,
        instance_noise_std=config.instance_noise_std,
        instance_noise_anneal_steps=config.instance_noise_anneal_steps,
        synthetic_weight=config.synthetic_weight,
        d_steps=config.d_steps,
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


def _prepare_run(config, pretrain_steps):
    """Create the output folders, write the resolved config; return paths and counts."""
    out_dir = config.out_dir
    run = {
        "tensorboard_dir": os.path.join(out_dir, "tensorboard"),
        "checkpoint_dir": os.path.join(out_dir, "checkpoints"),
        "plot_dir": os.path.join(out_dir, "plots"),
        "log_csv": os.path.join(out_dir, "log.csv"),
        "eval_csv": os.path.join(out_dir, "eval.csv"),
        "total_steps": pretrain_steps + config.steps,
        "pretrain_steps": pretrain_steps,
        "checkpoint_interval": config.checkpoint_interval,
        "eval_interval": config.eval_interval,
    }
    for folder in (out_dir, run["tensorboard_dir"], run["checkpoint_dir"], run["plot_dir"]):
        os.makedirs(folder, exist_ok=True)
    with open(os.path.join(out_dir, "config.json"), "w", encoding="utf-8") as handle:
        json.dump(config.to_toml_dict(), handle, indent=2)
    return run


class _SnapshotEvaluator:
    """Diagnose the raw and the EMA generator on fixed latents; keep the best snapshot.

    Each ``evaluate(step)`` appends a row to ``rows``, rewrites ``eval.csv`` (so the
    file is current while training runs) and returns the row. Per generator the row
    contains the :func:`compare_chunks` figures and the columns of
    :func:`toast_crab.training.diagnostics.summary_row`, whose ``<label>_score`` is
    the checkpoint score. The snapshot with the lowest score so far is kept: its
    weights are copied and, when ``best_path`` is set, written there.

    NOTE: the selection chunks are the first ``n_eval_chunks`` of the validation
    chunks that the card's final figures also use, so those figures are slightly
    optimistic for the selected snapshot.

    Args:
        config: Run settings with ``n_eval_chunks`` and ``seed``.
        data (dict): ``validation_w``, ``latents``, ``transform`` and ``train``.
        trainer (keras.Model): Has ``generator`` and ``ema_generator``.
        eval_csv (str): Path of ``eval.csv``.
        best_path (str): Weights file of the best generator, or None.
        extra_columns (callable): Optional ``f(label, figures) -> dict`` of more
            columns per generator.
    """

    def __init__(self, config, data, trainer, eval_csv, best_path=None, extra_columns=None):
        self.trainer = trainer
        self.transform = data["transform"]
        self.sample_rate_hz = data["train"].sample_rate_hz
        self.n_eval = min(config.n_eval_chunks, data["latents"].shape[0])
        self.reference_w = data["validation_w"][: self.n_eval]
        self.latents = data["latents"][: self.n_eval]
        self.seed = int(config.seed)
        self.reference = diagnostics.make_reference(self.reference_w, seed=self.seed)
        self.eval_csv = eval_csv
        self.best_path = best_path
        self.extra_columns = extra_columns
        self.rows = []
        self.best = None

    def evaluate(self, step):
        row = {"step": int(step)}
        generators = (("raw", self.trainer.generator), ("ema", self.trainer.ema_generator))
        for label, generator in generators:
            generated_w = _generate_w(generator, self.latents, self.transform)
            figures = compare_chunks(self.reference_w, generated_w, self.sample_rate_hz)
            tail = figures["fraction_beyond_5_sigma"]
            rms = figures["rms_w"]
            row[f"{label}_ks_samples"] = figures["ks_samples"]
            row[f"{label}_ks_chunk_max"] = figures["ks_chunk_max"]
            row[f"{label}_rms_ratio"] = rms["generated"] / rms["reference"]
            row[f"{label}_tail_fraction_ratio"] = tail["generated"] / max(tail["reference"], 1e-300)
            if self.extra_columns is not None:
                row.update(self.extra_columns(label, figures))

            diag = diagnostics.diagnose(
                self.reference_w, generated_w, reference=self.reference, seed=self.seed
            )
            row.update(diagnostics.summary_row(diag, prefix=f"{label}_"))
            if self.best is None or diag["score"] < self.best["score"]:
                self._keep_best(step, label, generator, diag)
        self.rows.append(row)
        _write_rows(self.eval_csv, self.rows)
        return row

    def _keep_best(self, step, label, generator, diag):
        self.best = {
            "step": int(step),
            "generator": label,
            "score": float(diag["score"]),
            "collapsed": bool(diag["collapsed"]),
            "weights": [np.array(weight) for weight in generator.get_weights()],
        }
        if self.best_path is not None:
            generator.save_weights(self.best_path)

    def best_generator(self):
        """Return a copy of the generator with the best snapshot's weights."""
        generator = keras.models.clone_model(self.trainer.generator)
        generator.set_weights(self.best["weights"])
        return generator

    def card_entry(self, n_validation):
        """Return the card's ``selection`` entry: what was selected, how and why."""
        return {
            "step": self.best["step"],
            "generator": self.best["generator"],
            "score": self.best["score"],
            "collapsed": self.best["collapsed"],
            "n_evaluations": len(self.rows),
            "metric": (
                "toast_crab.training.diagnostics.checkpoint_score: mean over distance, "
                "coverage, density and glitch statistics of min(|z|, 100), with z against "
                f"real-vs-real splits of the first {self.n_eval} validation chunks, for the "
                f"raw and the EMA generator on {self.n_eval} fixed latents at every "
                "evaluation; the lowest score is selected"
            ),
            "caveat": (
                f"the {self.n_eval} selection chunks are among the {n_validation} chunks of "
                "the validation figures, so those figures are slightly optimistic"
            ),
        }


def _write_eval_scalars(writer, row):
    """Write one evaluation row to TensorBoard under ``eval/<column>``."""
    with writer.as_default(step=int(row["step"])):
        for key, value in row.items():
            if key != "step":
                _write_scalar_summary(f"eval/{key}", float(value))


def _fit_phases(trainer, dataset, pretrain_steps, steps, logger):
    """Run the discriminator pre-training, then the adversarial phase."""
    fit_options = {"epochs": 1, "verbose": 0, "shuffle": False, "callbacks": [logger]}
    if pretrain_steps > 0:
        trainer.pretraining = True
        trainer.fit(dataset, steps_per_epoch=pretrain_steps, **fit_options)

    # The flag is read when train_step is traced, so the function is rebuilt.
    trainer.pretraining = False
    trainer.train_function = None
    logger.phase = "adversarial"
    trainer.fit(dataset, steps_per_epoch=steps, **fit_options)


def _validate(config, data, trainer, evaluator):
    """Measure the exported generator and the last EMA or raw one on the held-out chunks.

    Returns:
        (tuple): The exported generator, the card's ``validation`` entry, the
        exported generator's chunks ((n_chunks, chunk_length) float64, W) and its
        diagnosis on all validation chunks.
    """
    sample_rate_hz = data["train"].sample_rate_hz
    validation_w = data["validation_w"]
    transform = data["transform"]
    exported, exported_name = choose_export(config, trainer, evaluator)
    if config.export_generator == "ema":
        other, other_name = trainer.generator, f"raw at step {config.steps} (last)"
    else:
        other, other_name = trainer.ema_generator, f"ema at step {config.steps} (last)"
    generated_w = _generate_w(exported, data["latents"], transform)
    other_w = _generate_w(other, data["latents"], transform)
    n_validation = validation_w.shape[0]

    # MC-vs-MC figures give the scale of sampling differences between MC runs.
    baseline_rng = np.random.default_rng(np.random.SeedSequence([config.seed, 2]))
    n_baseline = min(n_validation, data["train"].n_chunks)
    baseline_index = np.sort(
        baseline_rng.choice(data["train"].n_chunks, size=n_baseline, replace=False)
    )
    baseline_w = data["train"].chunks[baseline_index]

    reference = diagnostics.make_reference(validation_w, seed=config.seed)
    diagnosis = diagnostics.diagnose(validation_w, generated_w, reference, seed=config.seed)
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
        "other_generator": {
            "generator": other_name,
            "figures": compare_chunks(validation_w, other_w, sample_rate_hz),
        },
        "discriminator_mean_sigmoid": {
            "note": "discriminator of the last step, not of the exported snapshot",
            "validation": _discriminator_response(
                trainer.discriminator, data["val_y"][:n_validation]
            ),
            "generated": _discriminator_response(
                trainer.discriminator, transform.forward(generated_w).astype(np.float32)
            ),
        },
        "mc_vs_mc": {
            "method": "the same figures for training-split MC chunks vs the validation MC chunks",
            "figures": compare_chunks(validation_w[:n_baseline], baseline_w, sample_rate_hz),
            "diagnostics": diagnostics.diagnosis_to_json(baseline_diagnosis),
        },
    }
    return exported, validation, generated_w, diagnosis


def _median_ms(step_ms, phase):
    values = [ms for step_phase, ms in step_ms if step_phase == phase]
    return float(np.median(values)) if values else None


def _make_card(config, data, trainer, timing, validation, evaluator):
    from .. import __version__
    from ..bundle import CARD_SCHEMA, CARD_SCHEMA_VERSION

    training = {
        "recipe": "CRAB binary cross-entropy GAN (toast_crab.training.crab_bce)",
        "settings": config.to_toml_dict(),
        "seed": config.seed,
        "adversarial_steps": int(config.steps),
        "generator_params": int(trainer.generator.count_params()),
        "discriminator_params": int(trainer.discriminator.count_params()),
        "wall_time_s": None,
        "machine": _machine_description(),
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
        "numpy_version": np.__version__,
        "toast_crab_version": __version__,
        "git_commit": _git_commit(),
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    training.update(timing)
    training.update(_export_entry(config, evaluator, data["validation_w"].shape[0]))
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
        "training_data": _training_data_entry(config, data),
        "training": training,
        "validation": validation,
    }


def choose_export(config, trainer, evaluator):
    """Return the generator that ``config.export_generator`` selects, and its name.

    Returns:
        (tuple): ``(generator, name)``: a copy of the best snapshot for ``best``,
        else the trainer's last EMA or raw generator; the name says which and why.
    """
    if config.export_generator == "best":
        best = evaluator.best
        name = f"{best['generator']} at step {best['step']} (lowest checkpoint score)"
        return evaluator.best_generator(), name
    if config.export_generator == "ema":
        return trainer.ema_generator, f"ema at step {config.steps} (last)"
    return trainer.generator, f"raw at step {config.steps} (last)"


def _export_entry(config, evaluator, n_validation):
    """Return the card fields that record which generator snapshot was exported and why."""
    selection = evaluator.card_entry(n_validation)
    if config.export_generator == "best":
        generator, step = evaluator.best["generator"], evaluator.best["step"]
        reason = "lowest checkpoint score over all evaluations (export_generator = 'best')"
    else:
        generator, step = config.export_generator, int(config.steps)
        reason = f"last {generator} weights (export_generator = {generator!r})"
    return {
        "export_generator": config.export_generator,
        "exported_generator": generator,
        "exported_step": step,
        "export_reason": reason,
        "selection": selection,
    }


def _write_rows(path, rows):
    with open(path, "w", newline="", encoding="utf-8") as handle:
        if not rows:
            return
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
