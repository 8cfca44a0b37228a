"""The ``seamless`` recipe: a fully convolutional, optionally phi-conditioned GAN.

The generator (:func:`toast_crab.models.build_seamless_generator`) maps a latent
sequence to a timestream of any length; the critic
(:func:`toast_crab.models.build_seamless_critic`) returns one logit per patch.
Training uses the non-saturating GAN loss (Goodfellow et al. 2014,
arXiv:1406.2661) with the R1 penalty on real data (Mescheder et al. 2018,
arXiv:1801.04406) applied lazily, every ``r1_interval`` critic updates with the
weight multiplied by ``r1_interval`` (Karras et al. 2020, arXiv:1912.04958). An
exponential moving average (EMA) of the generator weights is kept.

Training matches inference: each fake crop comes from ``crop_length / S + 2 H``
latent positions, and the ``H * S`` samples at each end are dropped, so no critic
input depends on the zero padding at the sequence edges. Real crops start at random offsets
inside the MC chunks.

Conditioning: with ``condition = "phi_gv"`` each chunk's solar modulation potential
(label ``phi_gv``, GV) enters as ``(phi - offset) / scale``, with offset and scale
chosen so the trained levels span [-1, 1]. Chunks at ``held_out_levels_gv`` are not
trained on; they are the validation set of those levels. The other chunks are
split by MC run, file by file.

Checkpoint selection uses held-out MC runs of the trained levels, never the loss
and never the held-out levels.
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
from . import crab_bce
from .config import TomlConfig
from .crab_bce import compare_chunks
from .wgan_gp import selection_score

__all__ = [
    "CONDITION_MODES",
    "FAMILY",
    "SeamlessConfig",
    "SeamlessGAN",
    "normalise_condition",
    "train_seamless",
]

FAMILY = "seamless"

# Values of [model] condition: the label the generator is conditioned on, or none.
CONDITION_MODES = ("phi_gv", "none")

# Two phi labels closer than this (GV) are the same level; the MC writes them
# from one float per run.
_LEVEL_TOLERANCE_GV = 1e-6

# Threshold of the glitch finder, in units of the training set's robust sigma.
_EVENT_THRESHOLD_SIGMA = 5.0

# Floor of the generated/MC event-rate ratio in the selection score, so a model
# that makes no events scores 3 instead of infinity.
_RATE_RATIO_FLOOR = 1e-3


@dataclass(frozen=True)
class SeamlessConfig(TomlConfig):
    """Settings of one ``seamless`` training run.

    The TOML config groups the fields in tables: top level (``family``, ``name``,
    ``description``, ``seed``), ``[data]``, ``[model]``, ``[training]`` and
    ``[output]``. See ``configs/seamless.toml`` for a commented example. In
    ``[data]``, ``paths`` lists the training-set files; ``path`` (which
    ``crab-train --data`` sets) replaces them with one file when not empty.
    """

    # top level
    name: str = "seamless"
    description: str = ""
    seed: int = 1234
    # [data]
    data_paths: tuple = ()
    data_file: str = ""
    validation_fraction: float = 0.1
    held_out_levels_gv: tuple = ()
    # [model]
    condition: str = "phi_gv"
    latent_channels: int = 16
    generator_filters: tuple = (64, 48, 32)
    generator_kernel_size: int = 9
    critic_filters: tuple = (32, 64, 64)
    critic_kernel_size: int = 9
    # [training]
    batch_size: int = 32
    crop_length: int = 512
    steps: int = 5000
    g_learning_rate: float = 2e-4
    d_learning_rate: float = 2e-4
    adam_beta_1: float = 0.0
    adam_beta_2: float = 0.99
    r1_weight: float = 1.0
    r1_interval: int = 4
    ema_decay: float = 0.999
    # [output]
    out_dir: str = "out/seamless"
    bundle_path: str = ""
    checkpoint_interval: int = 1000
    eval_interval: int = 250
    n_eval_chunks: int = 256
    n_validation_chunks: int = 1000
    long_timeline_samples: int = 20000

    _FAMILY = FAMILY

    # TOML table -> {TOML key: field name}
    _LAYOUT = {
        "": {"family": None, "name": "name", "description": "description", "seed": "seed"},
        "data": {
            "paths": "data_paths",
            "path": "data_file",
            "validation_fraction": "validation_fraction",
            "held_out_levels_gv": "held_out_levels_gv",
        },
        "model": {
            key: key
            for key in (
                "condition", "latent_channels", "generator_filters", "generator_kernel_size",
                "critic_filters", "critic_kernel_size",
            )
        },
        "training": {
            key: key
            for key in (
                "batch_size", "crop_length", "steps", "g_learning_rate", "d_learning_rate",
                "adam_beta_1", "adam_beta_2", "r1_weight", "r1_interval", "ema_decay",
            )
        },
        "output": {
            "dir": "out_dir",
            "bundle": "bundle_path",
            "checkpoint_interval": "checkpoint_interval",
            "eval_interval": "eval_interval",
            "n_eval_chunks": "n_eval_chunks",
            "n_validation_chunks": "n_validation_chunks",
            "long_timeline_samples": "long_timeline_samples",
        },
    }

    def __post_init__(self):
        # TOML arrays arrive as lists; the frozen config stores tuples.
        for key in ("data_paths", "held_out_levels_gv", "generator_filters", "critic_filters"):
            if isinstance(getattr(self, key), list):
                object.__setattr__(self, key, tuple(getattr(self, key)))
        self._check_types()
        self._check_lists()
        self._check_values()

    @property
    def latent_stride(self):
        """Samples per latent position, ``2 ** (len(generator_filters) - 1)`` (int)."""
        return 2 ** (len(self.generator_filters) - 1)

    @property
    def training_paths(self):
        """The training-set files: ``(data_file,)`` when set, else ``data_paths``."""
        return (self.data_file,) if self.data_file else tuple(self.data_paths)

    @property
    def data_path(self):
        """The first training-set file (str), for tools that check one path."""
        return self.training_paths[0] if self.training_paths else ""

    def _check_lists(self):
        for key in ("generator_filters", "critic_filters"):
            values = getattr(self, key)
            if not values or not all(
                isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values
            ):
                raise ValueError(
                    f"seamless config entry {key!r} must be a non-empty list of positive "
                    f"ints. Got {list(values)!r}."
                )
        if not all(isinstance(p, str) and p for p in self.data_paths):
            raise ValueError(
                "seamless config entry [data] paths must be a list of file names. "
                f"Got {list(self.data_paths)!r}."
            )
        levels = self.held_out_levels_gv
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in levels):
            raise ValueError(
                "seamless config entry [data] held_out_levels_gv must be a list of numbers "
                f"in GV. Got {list(levels)!r}."
            )

    def _check_values(self):
        positive = (
            "latent_channels", "generator_kernel_size", "critic_kernel_size", "batch_size",
            "crop_length", "steps", "g_learning_rate", "d_learning_rate", "r1_interval",
            "checkpoint_interval", "eval_interval", "n_eval_chunks", "n_validation_chunks",
            "long_timeline_samples",
        )
        for key in positive:
            if not getattr(self, key) > 0:
                raise ValueError(
                    f"seamless config entry {key!r} must be positive. Got {getattr(self, key)!r}."
                )
        for key in ("generator_kernel_size",):
            if getattr(self, key) % 2 == 0:
                raise ValueError(
                    f"seamless config entry {key!r} must be odd. Got {getattr(self, key)!r}."
                )
        if self.r1_weight < 0:
            raise ValueError(
                f"seamless config entry 'r1_weight' must be >= 0. Got {self.r1_weight!r}."
            )
        for key in ("adam_beta_1", "adam_beta_2", "ema_decay"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise ValueError(
                    f"seamless config entry {key!r} must be in [0, 1). Got {getattr(self, key)!r}."
                )
        if not 0.0 < self.validation_fraction < 1.0:
            raise ValueError(
                f"seamless config entry 'validation_fraction' must be in (0, 1). "
                f"Got {self.validation_fraction!r}."
            )
        if self.condition not in CONDITION_MODES:
            raise ValueError(
                f"seamless config entry 'condition' must be one of {list(CONDITION_MODES)}. "
                f"Got {self.condition!r}."
            )
        if self.condition == "none" and self.held_out_levels_gv:
            raise ValueError(
                f"seamless config entry held_out_levels_gv = {list(self.held_out_levels_gv)} "
                "is invalid with condition = 'none'. Set condition = \"phi_gv\" or held_out_levels_gv = []."
            )
        if self.crop_length % self.latent_stride != 0:
            raise ValueError(
                f"seamless config entry 'crop_length' ({self.crop_length}) must be a multiple "
                f"of the latent stride {self.latent_stride} (2 ** (len(generator_filters) - 1)). "
                f"Use e.g. {self.latent_stride * max(1, self.crop_length // self.latent_stride)}."
            )
        if not self.training_paths:
            raise ValueError(
                "seamless config has no training set: set [data] paths in the TOML or "
                "pass --data PATH."
            )


def normalise_condition(phi_gv, conditioning_entry):
    """Map phi values in GV to the generator's condition input.

    Args:
        phi_gv (array): (n,) float64, GV.
        conditioning_entry (dict): The card's ``conditioning["phi_gv"]`` entry.

    Returns:
        (ndarray): (n, 1) float32, ``(phi_gv - offset) / scale``.
    """
    phi_gv = np.asarray(phi_gv, dtype=np.float64).reshape(-1, 1)
    offset = float(conditioning_entry["offset"])
    scale = float(conditioning_entry["scale"])
    return ((phi_gv - offset) / scale).astype(np.float32)


class SeamlessGAN(AdversarialTrainer):
    """Generator and patch critic trained with the non-saturating loss and lazy R1.

    Each ``train_step`` receives ``(real, condition)``: real crops (batch,
    crop_length) float32 in network space and their conditions (batch,
    n_conditions) float32 (ignored by an unconditioned generator). It makes one
    critic update, then one generator update and one EMA update.

    Critic loss: ``mean softplus(-D(x)) + mean softplus(D(G(z)))`` over patches and
    chunks, plus, on every ``r1_interval``-th update,
    ``r1_interval * r1_weight / 2 * mean_chunks |grad_x sum_patches D(x)|^2`` on
    the real crops. Generator loss: ``mean softplus(-D(G(z)))``.

    Args:
        generator (keras.Model): Seamless generator.
        critic (keras.Model): Patch critic with the same conditioning.
        crop_length (int): Samples per training crop; a multiple of the stride.
        halo (int): ``H`` of the generator in latent positions.
        r1_weight (float): ``gamma`` of the R1 penalty.
        r1_interval (int): Critic updates between R1 evaluations.
        ema_decay (float): Decay of the EMA generator; the decay used at update
            ``t`` is ``min(ema_decay, (1 + t) / (10 + t))``.
        seed (int): Seed of the model's ``SeedGenerator`` (latents).
    """

    def __init__(self, generator, critic, crop_length, halo, r1_weight=1.0, r1_interval=4,
                 ema_decay=0.999, seed=None, **kwargs):
        super().__init__(**kwargs)
        from ..models.seamless import latent_stride

        self.generator = generator
        self.critic = critic
        self.ema_generator = keras.models.clone_model(generator)
        self.ema_generator.set_weights(generator.get_weights())
        self.stride = latent_stride(generator)
        self.halo = int(halo)
        self.crop_length = int(crop_length)
        self.n_latent = self.crop_length // self.stride + 2 * self.halo
        self.latent_channels = int(generator.inputs[0].shape[-1])
        self.conditioned = len(generator.inputs) > 1
        self.r1_weight = float(r1_weight)
        self.r1_interval = int(r1_interval)
        self.ema_decay = float(ema_decay)
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.built = True

    def _opponent(self):
        return self.critic

    def call(self, inputs, training=False):
        return self.generator(inputs, training=training)

    def generate_crops(self, generator, condition, training=False):
        """Generate one crop per condition row, with the halo cut off both ends."""
        batch_size = ops.shape(condition)[0]
        latents = keras.random.normal(
            (batch_size, self.n_latent, self.latent_channels), seed=self.seed_generator
        )
        inputs = [latents, condition] if self.conditioned else latents
        timestream = generator(inputs, training=training)
        start = self.halo * self.stride
        return timestream[:, start : start + self.crop_length]

    def _critic_logits(self, timestream, condition):
        inputs = [timestream, condition] if self.conditioned else timestream
        return self.critic(inputs, training=True)

    def _r1_penalty(self, real, condition):
        with tf.GradientTape() as tape:
            tape.watch(real)
            logits = self._critic_logits(real, condition)
            scores = ops.sum(logits)
        gradients = tape.gradient(scores, real)
        # Patches see nearly disjoint samples, so |grad sum_p D_p|^2 / n_patches is
        # the mean over patches of the per-patch R1 term.
        n_patches = ops.cast(ops.shape(logits)[1], "float32")
        return 0.5 * self.r1_weight * ops.mean(ops.sum(ops.square(gradients), axis=1)) / n_patches

    def _critic_step(self, real, condition):
        fake = self.generate_crops(self.generator, condition, training=True)
        do_r1 = ops.equal(self.d_optimizer.iterations % self.r1_interval, 0)
        with tf.GradientTape() as tape:
            real_logits = self._critic_logits(real, condition)
            fake_logits = self._critic_logits(fake, condition)
            adversarial = ops.mean(ops.softplus(-real_logits)) + ops.mean(ops.softplus(fake_logits))
            if self.r1_weight > 0:
                r1 = tf.cond(
                    do_r1,
                    lambda: self._r1_penalty(real, condition),
                    lambda: tf.constant(0.0, dtype="float32"),
                )
            else:
                r1 = tf.constant(0.0, dtype="float32")
            d_loss = adversarial + self.r1_interval * r1
        weights = self.critic.trainable_variables
        self.d_optimizer.apply_gradients(zip(tape.gradient(d_loss, weights), weights))
        return {
            "d_loss": adversarial,
            "r1_penalty": r1,
            "r1_applied": ops.cast(do_r1, "float32"),
            "d_real": ops.mean(ops.sigmoid(real_logits)),
            "d_fake": ops.mean(ops.sigmoid(fake_logits)),
        }

    def _generator_step(self, condition):
        with tf.GradientTape() as tape:
            fake = self.generate_crops(self.generator, condition, training=True)
            g_loss = ops.mean(ops.softplus(-self._critic_logits(fake, condition)))
        weights = self.generator.trainable_variables
        self.g_optimizer.apply_gradients(zip(tape.gradient(g_loss, weights), weights))
        return g_loss

    def train_step(self, data):
        real, condition = data
        real = ops.convert_to_tensor(real, dtype="float32")
        condition = ops.convert_to_tensor(condition, dtype="float32")
        metrics = self._critic_step(real, condition)
        metrics["g_loss"] = self._generator_step(condition)
        self._update_ema()
        return metrics


# ---------------------------------------------------------------------------------
# Data


def _read_levels(config):
    """Read every training-set file; return the chunks, labels and facts per file."""
    from ..datasets import read_training_set

    files = []
    for path in config.training_paths:
        training_set = read_training_set(path)
        if config.condition == "phi_gv" and "phi_gv" not in training_set.labels:
            raise ValueError(
                f"Training set {path!r} has no 'phi_gv' label, so it cannot train a "
                "phi-conditioned model. Make it with crab-mc, or set condition = \"none\"."
            )
        if training_set.n_detectors != 1:
            raise ValueError(
                f"Training set {path!r} contains groups of {training_set.n_detectors} detectors; "
                "the seamless family trains on single-detector sets."
            )
        files.append((path, training_set))
    first_path, first = files[0]
    for path, training_set in files[1:]:
        if (training_set.sample_rate_hz, training_set.chunk_length) != (
            first.sample_rate_hz, first.chunk_length
        ):
            raise ValueError(
                f"Training sets {first_path!r} and {path!r} differ in sample rate or chunk "
                f"length ({first.sample_rate_hz} Hz, {first.chunk_length} vs "
                f"{training_set.sample_rate_hz} Hz, {training_set.chunk_length}). Train on "
                "sets made with the same MC readout."
            )
    if config.crop_length > first.chunk_length:
        raise ValueError(
            f"seamless config entry 'crop_length' ({config.crop_length}) exceeds the chunk "
            f"length {first.chunk_length} of the training sets. Use a crop of at most "
            f"{first.chunk_length} samples."
        )
    return files


def _phi_of(training_set):
    if "phi_gv" in training_set.labels:
        return np.asarray(training_set.labels["phi_gv"], dtype=np.float64)
    return np.full(training_set.n_chunks, np.nan)


def _level_key(phi_gv):
    phi_gv = float(phi_gv)
    return None if not np.isfinite(phi_gv) else round(phi_gv, 6)


def _prepare_data(config):
    """Read, split by level and run, and transform the training sets.

    Returns:
        (dict): The training arrays ``train_y`` (n, chunk_length) float32 and
        ``train_condition`` (n, 1) float32. ``levels`` is a list of dicts with
        ``phi_gv``, ``held_out``, ``validation_w`` and ``n_train``. The other entries
        are ``transform``, ``conditioning`` (the card entry), ``sample_rate_hz``,
        ``chunk_length`` and ``files`` (provenance).
    """
    from ..datasets import split_by_run
    from ..transforms import AsinhTransform

    files = _read_levels(config)
    all_phi = np.concatenate([_phi_of(training_set) for _, training_set in files])
    present = sorted({_level_key(phi) for phi in all_phi if np.isfinite(phi)})
    for level in config.held_out_levels_gv:
        if not np.any(np.abs(np.asarray(present) - level) <= _LEVEL_TOLERANCE_GV):
            raise ValueError(
                f"Held-out level {level} GV is not in the training sets, which contain phi "
                f"levels {present} GV. Fix [data] held_out_levels_gv or add the set."
            )

    train_parts, validation_parts, file_entries = [], {}, []
    for path, training_set in files:
        phi = _phi_of(training_set)
        is_held_out = np.zeros(training_set.n_chunks, dtype=bool)
        for level in config.held_out_levels_gv:
            is_held_out |= np.abs(phi - level) <= _LEVEL_TOLERANCE_GV
        entry = {"path": os.path.abspath(path), "sha256": crab_bce._sha256(path),
                 "n_chunks": training_set.n_chunks, "n_held_out": int(is_held_out.sum()),
                 "provenance": training_set.provenance}
        if np.any(is_held_out):
            held_set = training_set.subset(is_held_out)
            for key in sorted({_level_key(p) for p in _phi_of(held_set)}):
                validation_parts.setdefault(key, []).append(
                    held_set.subset(np.abs(_phi_of(held_set) - key) <= _LEVEL_TOLERANCE_GV)
                )
        if np.all(is_held_out):
            file_entries.append(entry)
            continue
        train_set, val_set = split_by_run(
            training_set.subset(~is_held_out), config.validation_fraction, config.seed
        )
        entry.update(n_train=train_set.n_chunks, n_validation=val_set.n_chunks,
                     validation_runs=sorted(int(r) for r in np.unique(val_set.labels["run_id"])))
        file_entries.append(entry)
        train_parts.append(train_set)
        for key in sorted({_level_key(p) for p in _phi_of(val_set)}, key=lambda k: (k is None, k)):
            mask = np.array([_level_key(p) == key for p in _phi_of(val_set)])
            validation_parts.setdefault(key, []).append(val_set.subset(mask))

    if not train_parts:
        raise ValueError(
            f"Every chunk is at a held-out level {list(config.held_out_levels_gv)} GV, so "
            "nothing is left to train on. Hold out fewer levels or add training sets."
        )
    train_w = np.concatenate([part.chunks for part in train_parts])
    train_phi = np.concatenate([_phi_of(part) for part in train_parts])
    scale_w = crab_bce.robust_sigma(train_w)
    if not (np.isfinite(scale_w) and scale_w > 0):
        raise ValueError(
            f"The robust standard deviation of the training samples is {scale_w!r} W, so "
            "the asinh transform has no scale. Train on chunks with a continuum."
        )
    transform = AsinhTransform(scale_w)
    conditioning, train_condition = _conditioning_entry(config, train_phi, present)

    levels = []
    held_keys = {_level_key(level) for level in config.held_out_levels_gv}
    for key in sorted(validation_parts, key=lambda k: (k is None, k)):
        chunks = np.concatenate([part.chunks for part in validation_parts[key]])
        levels.append({
            "phi_gv": key,
            "held_out": key in held_keys,
            "validation_w": chunks[: config.n_validation_chunks],
            "n_train": int(np.sum([_level_key(p) == key for p in train_phi])),
        })
    return {
        "train_y": transform.forward(train_w).astype(np.float32),
        "train_condition": train_condition,
        "levels": levels,
        "transform": transform,
        "conditioning": conditioning,
        "sample_rate_hz": files[0][1].sample_rate_hz,
        "chunk_length": files[0][1].chunk_length,
        "files": file_entries,
    }


def _conditioning_entry(config, train_phi, present):
    """Return the card's conditioning entry and the (n, 1) float32 condition inputs."""
    if config.condition == "none":
        return {}, np.zeros((train_phi.size, 1), dtype=np.float32)
    trained = sorted({_level_key(phi) for phi in train_phi})
    if len(trained) < 2:
        raise ValueError(
            f"A phi-conditioned model needs at least two trained phi levels; the training "
            f"chunks hold {trained} GV. Add training sets at other levels or set "
            "condition = \"none\"."
        )
    low, high = trained[0], trained[-1]
    entry = {
        "unit": "GV",
        "offset": 0.5 * (low + high),
        "scale": 0.5 * (high - low),
        "range": [low, high],
        "training_levels": trained,
        "held_out_levels": sorted(_level_key(level) for level in config.held_out_levels_gv),
        "levels_in_data": present,
        "normalisation": "(phi_gv - offset) / scale, so the trained range maps to [-1, 1]",
    }
    return {"phi_gv": entry}, normalise_condition(train_phi, entry)


def make_crop_dataset(chunks_y, condition, crop_length, batch_size, seed):
    """Build the shuffled, repeated pipeline of random crops with their conditions.

    Args:
        chunks_y (array): (n_chunks, chunk_length) float32, network space.
        condition (array): (n_chunks, n_conditions) float32.
        crop_length (int): Samples per crop, at most chunk_length.
        batch_size (int): Crops per batch.
        seed (int): Seed of the shuffle and of the crop offsets.

    Returns:
        (tf.data.Dataset): Endless batches of ``((batch, crop_length) float32,
        (batch, n_conditions) float32)``.

    Raises:
        ValueError: If there are fewer chunks than one batch.
    """
    n_chunks, chunk_length = chunks_y.shape
    if n_chunks < batch_size:
        raise ValueError(
            f"The training split has {n_chunks} chunks, fewer than one batch of "
            f"{batch_size}. Lower batch_size or use a larger training set."
        )
    n_offsets = chunk_length - crop_length + 1
    chunks = tf.data.Dataset.from_tensor_slices((chunks_y, condition))
    chunks = chunks.shuffle(n_chunks, seed=seed, reshuffle_each_iteration=True).repeat()
    # A separate seeded random stream gives each crop its offset, independent of the shuffle.
    offsets = tf.data.Dataset.random(seed=seed + 1).map(lambda value: value % n_offsets)

    def crop(pair, offset):
        chunk, chunk_condition = pair
        return chunk[offset : offset + crop_length], chunk_condition

    dataset = tf.data.Dataset.zip((chunks, offsets)).map(crop)
    return dataset.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


# ---------------------------------------------------------------------------------
# Evaluation


def generate_timestreams(generator, n_streams, n_samples, halo, stride, rng, condition=None,
                         batch_size=64):
    """Generate timestreams of any length with the halo cut off both ends.

    Args:
        generator (keras.Model): Seamless generator.
        n_streams (int): Timestreams to make.
        n_samples (int): Samples per timestream.
        halo (int): ``H`` in latent positions.
        stride (int): Samples per latent position.
        rng (numpy.random.Generator): Source of the latents.
        condition (array): (n_conditions,) float32 normalised condition, or None.
        batch_size (int): Timestreams per generator call.

    Returns:
        (ndarray): (n_streams, n_samples) float32, network space.
    """
    n_latent = -(-n_samples // stride) + 2 * halo
    latent_channels = int(generator.inputs[0].shape[-1])
    outputs = []
    for start in range(0, n_streams, batch_size):
        count = min(batch_size, n_streams - start)
        latents = rng.standard_normal((count, n_latent, latent_channels)).astype(np.float32)
        inputs = latents
        if condition is not None:
            inputs = [latents, np.tile(np.asarray(condition, np.float32), (count, 1))]
        y = np.asarray(generator.predict_on_batch(inputs))
        outputs.append(y[:, halo * stride : halo * stride + n_samples])
    return np.concatenate(outputs)


def level_figures(reference_w, generated_w, sample_rate_hz, sigma_w):
    """Measure one phi level: event rate, robust sigma, tail fraction and distances.

    Events are runs above the chunk median plus ``5 * sigma_w`` (one absolute
    threshold for every level, so the rate follows the particle flux).

    Args:
        reference_w (array): (n_ref, chunk_length) float64, W. MC chunks.
        generated_w (array): (n_gen, chunk_length) float64, W.
        sample_rate_hz (float): Sample rate.
        sigma_w (float): Noise level of the event threshold, W.

    Returns:
        (dict): ``events_per_chunk``, ``events_per_chunk_sem``, ``robust_sigma_w``,
        ``fraction_beyond_5_sigma`` (each ``{"mc": ..., "generated": ...}``), and
        ``ks_samples``, ``ks_chunk_max``, ``score``.
    """
    from ..validation.metrics import find_events

    figures = compare_chunks(reference_w, generated_w, sample_rate_hz)
    result = {}
    for label, chunks in (("mc", reference_w), ("generated", generated_w)):
        counts = find_events(chunks, sigma_w=sigma_w, threshold_sigma=_EVENT_THRESHOLD_SIGMA).counts
        result.setdefault("events_per_chunk", {})[label] = float(counts.mean())
        result.setdefault("events_per_chunk_sem", {})[label] = float(
            counts.std(ddof=1) / np.sqrt(counts.size) if counts.size > 1 else np.nan
        )
    for key, source in (("robust_sigma_w", "robust_sigma_w"),
                        ("fraction_beyond_5_sigma", "fraction_beyond_5_sigma")):
        result[key] = {"mc": figures[source]["reference"], "generated": figures[source]["generated"]}
    result["ks_samples"] = figures["ks_samples"]
    result["ks_chunk_max"] = figures["ks_chunk_max"]
    rates = result["events_per_chunk"]
    ratio = max(rates["generated"], _RATE_RATIO_FLOOR * rates["mc"]) / max(rates["mc"], 1e-300)
    rate_term = abs(float(np.log10(ratio))) if rates["mc"] > 0 else 0.0
    result["score"] = selection_score(figures) + rate_term
    return result


class _LevelEvaluator:
    """Evaluate both generators per phi level and keep the best snapshot.

    Each ``evaluate(step)`` generates ``n_eval_chunks`` chunks per level from fixed
    latents, appends one row per (generator, level) to ``eval.csv`` and, when the
    mean score over the trained levels beats the best so far, copies that
    generator's weights and writes ``checkpoints/best_generator.weights.h5``.
    """

    def __init__(self, config, data, trainer, run):
        self.config = config
        self.data = data
        self.trainer = trainer
        self.eval_csv = run["eval_csv"]
        self.best_path = os.path.join(run["checkpoint_dir"], "best_generator.weights.h5")
        self.rows = []
        self.best = None
        self.samples = []
        self.sigma_w = data["transform"].scale_w

    def condition_input(self, level):
        """Return the (1,) float32 condition input of a level, or None without conditioning."""
        if not self.data["conditioning"]:
            return None
        return normalise_condition([level["phi_gv"]], self.data["conditioning"]["phi_gv"])[0]

    def generate_w(self, generator, level, n_chunks, seed_index):
        rng = np.random.default_rng(np.random.SeedSequence([self.config.seed, 1, seed_index]))
        y = generate_timestreams(
            generator, n_chunks, self.data["chunk_length"], self.trainer.halo,
            self.trainer.stride, rng, self.condition_input(level),
        )
        return self.data["transform"].inverse(y)

    def evaluate(self, step):
        """Evaluate both generators at every level; return a summary row for TensorBoard."""
        summary = {"step": step}
        generators = (("raw", self.trainer.generator), ("ema", self.trainer.ema_generator))
        for label, generator in generators:
            scores = []
            for index, level in enumerate(self.data["levels"]):
                reference_w = level["validation_w"][: self.config.n_eval_chunks]
                generated_w = self.generate_w(generator, level, reference_w.shape[0], index)
                figures = level_figures(
                    reference_w, generated_w, self.data["sample_rate_hz"], self.sigma_w
                )
                self.rows.append(_eval_row(step, label, level, figures))
                rate = figures["events_per_chunk"]["generated"]
                summary[f"{label}_events_per_chunk_phi_{level['phi_gv']}"] = rate
                if not level["held_out"]:
                    scores.append(figures["score"])
                if label == "ema" and index == len(self.data["levels"]) // 2:
                    self.samples.append((step, level["phi_gv"], generated_w[0]))
            score = float(np.mean(scores))
            summary[f"{label}_score"] = score
            if self.best is None or score < self.best["score"]:
                self.best = {"step": int(step), "generator": label, "score": score,
                             "weights": [np.array(w) for w in generator.get_weights()]}
                generator.save_weights(self.best_path)
        crab_bce._write_rows(self.eval_csv, self.rows)
        return summary

    def exported_generator(self):
        """Return a copy of the generator with the best snapshot's weights."""
        generator = keras.models.clone_model(self.trainer.generator)
        generator.set_weights(self.best["weights"])
        return generator


def _eval_row(step, label, level, figures):
    row = {"step": step, "generator": label, "phi_gv": level["phi_gv"],
           "held_out": int(level["held_out"])}
    for key in ("events_per_chunk", "robust_sigma_w", "fraction_beyond_5_sigma"):
        row[f"{key}_mc"] = figures[key]["mc"]
        row[f"{key}_generated"] = figures[key]["generated"]
    row["ks_samples"] = figures["ks_samples"]
    row["ks_chunk_max"] = figures["ks_chunk_max"]
    row["score"] = figures["score"]
    return row


# ---------------------------------------------------------------------------------
# Training run


def train_seamless(config, progress=True):
    """Train a seamless generator and write logs, plots and a bundle.

    Outputs under ``config.out_dir``:

    * ``log.csv`` and ``tensorboard/``: every loss and metric for every step,
      with the step time in ms.
    * ``eval.csv``: per (step, generator, phi level) event rate, robust sigma,
      tail fraction, KS distances and score, every ``eval_interval`` steps.
    * ``checkpoints/``: trainer weights every ``checkpoint_interval`` steps,
      ``final.weights.h5`` and ``best_generator.weights.h5``.
    * ``plots/*.png``, ``config.json`` (the resolved settings) and ``card.json``.

    The bundle (the snapshot with the best mean score over the trained levels) goes
    to ``config.resolved_bundle_path()``.

    Args:
        config (SeamlessConfig): The run settings.
        progress (bool): Show a tqdm progress bar.

    Returns:
        (dict): ``bundle`` (keras path), ``card`` (the model card), ``out_dir``,
        ``log_csv``, ``plots`` (list of PNG paths).

    Raises:
        TypeError: If ``config`` is not a ``SeamlessConfig``.
        FileNotFoundError: If a training set does not exist.
        ValueError: If the training sets do not fit the config (unknown held-out
            level, crop longer than a chunk, a single trained level with
            conditioning, too few chunks or runs).
    """
    if not isinstance(config, SeamlessConfig):
        raise TypeError(f"config must be a SeamlessConfig. Got {type(config).__name__}.")
    for path in config.training_paths:
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"Training set {path!r} not found. Make the phi-level sets with "
                "scripts/make_training_sets.sh, or fix [data] paths."
            )
    from ..bundle import save_bundle

    wall_start = time.perf_counter()
    keras.utils.set_random_seed(config.seed)
    data = _prepare_data(config)
    dataset = make_crop_dataset(
        data["train_y"], data["train_condition"], config.crop_length, config.batch_size,
        config.seed,
    )
    trainer = _build_trainer(config, data)
    run = crab_bce._prepare_run(config, pretrain_steps=0)
    evaluator = _LevelEvaluator(config, data, trainer, run)
    run["evaluate"] = evaluator.evaluate

    logger = crab_bce._StepLogger(run, progress=progress)
    logger.phase = "adversarial"
    train_start = time.perf_counter()
    try:
        trainer.fit(dataset, epochs=1, steps_per_epoch=config.steps, verbose=0, shuffle=False,
                    callbacks=[logger])
    finally:
        logger.close()
    train_seconds = time.perf_counter() - train_start
    trainer.save_weights(os.path.join(run["checkpoint_dir"], "final.weights.h5"))
    if not evaluator.rows or evaluator.rows[-1]["step"] != config.steps:
        evaluator.evaluate(config.steps)

    exported = evaluator.exported_generator()
    validation = _validate(config, data, evaluator, exported)
    timeline_rng = np.random.default_rng(np.random.SeedSequence([config.seed, 3]))
    timeline_level = data["levels"][len(data["levels"]) // 2]
    timeline_w = data["transform"].inverse(generate_timestreams(
        exported, 1, config.long_timeline_samples, trainer.halo, trainer.stride, timeline_rng,
        evaluator.condition_input(timeline_level),
    ))[0]
    plot_paths = plot_seamless_run(
        run, data, evaluator, validation, timeline_w, timeline_level, config.name
    )

    step_ms = [ms for _, ms in logger.step_ms]
    timing = {
        "train_loop_time_s": float(train_seconds),
        "adversarial_step_ms_median": float(np.median(step_ms)) if step_ms else None,
        # The first steps include graph tracing; later steps are the steady cost.
        "adversarial_step_ms_median_after_10": (
            float(np.median(step_ms[10:])) if len(step_ms) > 10 else None
        ),
    }
    card = _make_card(config, data, trainer, timing, validation, evaluator)
    card["training"]["wall_time_s"] = float(time.perf_counter() - wall_start)
    with open(os.path.join(config.out_dir, "card.json"), "w", encoding="utf-8") as handle:
        json.dump(card, handle, indent=2, sort_keys=True)
    keras_path, _ = save_bundle(exported, card, config.resolved_bundle_path())
    return {
        "bundle": keras_path,
        "card": card,
        "out_dir": config.out_dir,
        "log_csv": run["log_csv"],
        "plots": plot_paths,
    }


def _build_trainer(config, data):
    from ..models.seamless import build_seamless_critic, build_seamless_generator, halo_latents

    n_conditions = 1 if data["conditioning"] else 0
    generator = build_seamless_generator(
        config.latent_channels, config.generator_filters, config.generator_kernel_size,
        n_conditions=n_conditions,
    )
    critic = build_seamless_critic(
        config.critic_filters, config.critic_kernel_size, n_conditions=n_conditions
    )
    trainer = SeamlessGAN(
        generator, critic, config.crop_length, halo_latents(generator),
        r1_weight=config.r1_weight, r1_interval=config.r1_interval,
        ema_decay=config.ema_decay, seed=config.seed,
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


def _validate(config, data, evaluator, exported):
    """Measure the exported generator at every level on all validation chunks."""
    per_level = {}
    for index, level in enumerate(data["levels"]):
        reference_w = level["validation_w"]
        generated_w = evaluator.generate_w(exported, level, reference_w.shape[0], 100 + index)
        figures = level_figures(
            reference_w, generated_w, data["sample_rate_hz"], evaluator.sigma_w
        )
        figures["held_out"] = level["held_out"]
        figures["n_chunks"] = int(reference_w.shape[0])
        figures["n_train_chunks"] = level["n_train"]
        level["generated_w"] = generated_w
        per_level[str(level["phi_gv"])] = figures
    # The summary figures (read by crab-train) are those of the held-out level, or of
    # the middle level when nothing is held out.
    summary_level = next((level for level in data["levels"] if level["held_out"]),
                         data["levels"][len(data["levels"]) // 2])
    return {
        "figures_level_gv": summary_level["phi_gv"],
        "figures": compare_chunks(summary_level["validation_w"], summary_level["generated_w"],
                                  data["sample_rate_hz"]),
        "method": (
            "per phi level: validation MC chunks (held-out MC runs of trained levels, all "
            "chunks of held-out levels, at most n_validation_chunks) vs as many generated "
            f"chunks from fixed latents (SeedSequence([{config.seed}, 1, 100 + level index])); "
            f"events are runs above the chunk median + {_EVENT_THRESHOLD_SIGMA:g} * scale_w "
            f"(scale_w = {evaluator.sigma_w:.4g} W, the transform scale)"
        ),
        "event_threshold_sigma_w": float(evaluator.sigma_w),
        "per_level": per_level,
        "selection": {
            "step": evaluator.best["step"],
            "generator": evaluator.best["generator"],
            "score": evaluator.best["score"],
            "n_evaluations": len({row["step"] for row in evaluator.rows}),
            "metric": (
                "mean over trained levels of ks_samples + ks_chunk_max + |log10 tail-fraction "
                "ratio| + |log10 event-rate ratio| on the first n_eval_chunks validation "
                "chunks; held-out levels do not enter"
            ),
        },
    }


def _make_card(config, data, trainer, timing, validation, evaluator):
    from .. import __version__
    from ..bundle import CARD_SCHEMA, CARD_SCHEMA_VERSION

    training = {
        "recipe": (
            "non-saturating GAN with lazy R1 penalty, fully convolutional generator and "
            "patch critic (toast_crab.training.seamless)"
        ),
        "settings": config.to_toml_dict(),
        "seed": config.seed,
        "adversarial_steps": int(config.steps),
        "exported_generator": evaluator.best["generator"],
        "exported_step": evaluator.best["step"],
        "generator_params": int(trainer.generator.count_params()),
        "critic_params": int(trainer.critic.count_params()),
        "crop_length": int(config.crop_length),
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
        "sample_rate_hz": float(data["sample_rate_hz"]),
        "chunk_length": int(config.crop_length),
        "output_unit": "W",
        "transform": data["transform"].to_card(),
        "latent_shape": [int(config.latent_channels)],
        "latent_distribution": "standard normal, float32",
        "sequence": {"latent_stride": int(trainer.stride), "halo_latents": int(trainer.halo)},
        "conditioning": data["conditioning"],
        "training_data": {
            "files": data["files"],
            "n_chunks_train": int(data["train_y"].shape[0]),
            "mc_chunk_length": int(data["chunk_length"]),
            "split": (
                f"per file: chunks at held-out levels apart, the rest split_by_run("
                f"validation_fraction={config.validation_fraction}, seed={config.seed})"
            ),
        },
        "training": training,
        "validation": validation,
    }


# ---------------------------------------------------------------------------------
# Plots


def plot_seamless_run(run, data, evaluator, validation, timeline_w, timeline_level, title):
    """Write the PNG plots of one seamless run and return their paths.

    Args:
        run (dict): Paths of the run (``log_csv``, ``eval_csv``, ``plot_dir``).
        data (dict): Output of the data preparation, with ``generated_w`` added to
            each level by the final validation.
        evaluator (_LevelEvaluator): Holds the periodic samples.
        validation (dict): The card's ``validation`` entry.
        timeline_w (array): (n_samples,) float64, W. One long generated timeline.
        timeline_level (dict): The phi level of ``timeline_w``.
        title (str): Prefix of the plot titles, usually the model name.

    Returns:
        (list): Paths of the PNG files written.
    """
    from . import plots

    out_dir = run["plot_dir"]
    log = plots.read_log(run["log_csv"])
    sample_rate_hz = data["sample_rate_hz"]
    paths = [
        plots._plot_curves(
            log, ["d_loss", "g_loss"], "non-saturating GAN loss",
            f"{title}: critic and generator loss (without R1)", os.path.join(out_dir, "losses.png"),
        ),
        plots._plot_curves(
            log, ["r1_penalty"], "R1 penalty (0 on steps without it)",
            f"{title}: R1 penalty on real crops", os.path.join(out_dir, "r1_penalty.png"),
        ),
        plots._plot_curves(
            log, ["d_real", "d_fake"], "mean sigmoid(patch logit)",
            f"{title}: critic response on real and generated crops",
            os.path.join(out_dir, "critic_response.png"), ylim=(-0.02, 1.02),
        ),
        _plot_samples_during_training(
            evaluator.samples, sample_rate_hz, title, os.path.join(out_dir, "samples_during_training.png")
        ),
        _plot_long_timeline(
            timeline_w, timeline_level, data, sample_rate_hz, evaluator.sigma_w, title,
            os.path.join(out_dir, "long_timeline.png"),
        ),
        _plot_levels(validation, title, os.path.join(out_dir, "rate_vs_phi.png")),
        _plot_eval_levels(
            plots.read_log(run["eval_csv"]), title, os.path.join(out_dir, "rate_during_training.png")
        ),
    ]
    # Sample-level plots for the held-out level, or the middle level without one.
    plotted = next((level for level in data["levels"] if level["held_out"]), timeline_level)
    label = f"{title} at phi {plotted['phi_gv']} GV"
    name = f"phi_{plotted['phi_gv']}"
    paths += plots.plot_sample_comparison(
        plotted["validation_w"], plotted["generated_w"], sample_rate_hz,
        data["transform"].scale_w, label, out_dir, suffix=f"_{name}",
    )
    return paths


def _plot_samples_during_training(samples, sample_rate_hz, title, path, max_rows=6):
    import matplotlib.pyplot as plt

    picks = np.unique(np.linspace(0, len(samples) - 1, min(max_rows, len(samples))).astype(int))
    fig, axes = plt.subplots(len(picks), 1, figsize=(10, 1.6 * len(picks) + 0.8), sharex=True,
                             squeeze=False)
    for axis, index in zip(axes[:, 0], picks):
        step, phi_gv, chunk_w = samples[index]
        axis.plot(np.arange(chunk_w.size) / sample_rate_hz, chunk_w, lw=0.6, color="C3")
        axis.set_ylabel("power [W]")
        axis.set_title(f"step {step}", fontsize="small", loc="left")
        axis.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("time [s]")
    fig.suptitle(f"{title}: first fixed-latent EMA chunk at phi {samples[0][1]} GV during training")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_long_timeline(timeline_w, level, data, sample_rate_hz, sigma_w, title, path):
    import matplotlib.pyplot as plt

    from ..validation.metrics import find_events

    chunk_length = data["chunk_length"]
    n_chunks = timeline_w.size // chunk_length
    time_s = np.arange(timeline_w.size) / sample_rate_hz
    # Events per MC-chunk-length window along the timeline, against the MC mean.
    windows_w = timeline_w[: n_chunks * chunk_length].reshape(n_chunks, chunk_length)
    counts = find_events(windows_w, sigma_w=sigma_w, threshold_sigma=_EVENT_THRESHOLD_SIGMA).counts
    mc_counts = find_events(
        level["validation_w"], sigma_w=sigma_w, threshold_sigma=_EVENT_THRESHOLD_SIGMA
    ).counts

    fig, (full, rate, zoom) = plt.subplots(3, 1, figsize=(11, 8.5))
    full.plot(time_s, timeline_w, lw=0.4, color="C3")
    for k in range(1, n_chunks + 1):
        full.axvline(k * chunk_length / sample_rate_hz, color="0.6", lw=0.5, ls=":")
    full.set_xlabel("time [s]")
    full.set_ylabel("power [W]")
    full.set_title(
        f"one generator pass of {timeline_w.size} samples at phi {level['phi_gv']} GV; dotted "
        f"lines every {chunk_length} samples (no seams expected there)", fontsize="small",
    )
    centers_s = (np.arange(n_chunks) + 0.5) * chunk_length / sample_rate_hz
    rate.plot(centers_s, counts, "o-", color="C3", label="generated timeline")
    rate.axhline(mc_counts.mean(), color="C0", label="MC mean at this level")
    rate.axhspan(mc_counts.mean() - mc_counts.std(), mc_counts.mean() + mc_counts.std(),
                 color="C0", alpha=0.15, label="MC +- 1 standard deviation")
    rate.set_xlabel("time [s]")
    rate.set_ylabel(f"events per {chunk_length} samples")
    rate.legend(fontsize="small")
    rate.grid(alpha=0.3)
    # Zoom on the first window boundary, where a chunked generator would have a seam.
    center = chunk_length
    lo, hi = max(0, center - 150), min(timeline_w.size, center + 150)
    zoom.plot(np.arange(lo, hi), timeline_w[lo:hi], ".-", lw=0.6, ms=2, color="C3")
    zoom.axvline(center, color="0.4", ls=":")
    zoom.set_xlabel("sample index")
    zoom.set_ylabel("power [W]")
    zoom.set_title(f"zoom around sample {center}", fontsize="small")
    for axis in (full, zoom):
        axis.grid(alpha=0.3)
    fig.suptitle(f"{title}: long generated timeline")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_levels(validation, title, path):
    import matplotlib.pyplot as plt

    entries = validation["per_level"]
    keys = sorted(entries, key=float)
    phi = np.array([float(k) for k in keys])
    is_held_out = np.array([entries[k]["held_out"] for k in keys], dtype=bool)
    panels = (
        ("events_per_chunk", "events per chunk (> 5 scale_w)"),
        ("robust_sigma_w", "robust sigma [W]"),
        ("fraction_beyond_5_sigma", "fraction of samples beyond 5 sigma"),
    )
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    for axis, (key, ylabel) in zip(axes, panels):
        for label, color, marker in (("mc", "C0", "o"), ("generated", "C3", "s")):
            values = np.array([entries[k][key][label] for k in keys])
            errors = None
            if key == "events_per_chunk":
                errors = np.array([entries[k]["events_per_chunk_sem"][label] for k in keys])
            axis.errorbar(phi, values, yerr=errors, fmt=marker + "-", color=color,
                          label="MC" if label == "mc" else "generated", capsize=3)
        for value in phi[is_held_out]:
            axis.axvspan(value - 0.01, value + 0.01, color="0.85", zorder=0)
        axis.set_xlabel("solar modulation potential phi [GV]")
        axis.set_ylabel(ylabel)
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize="small", title="grey band: held-out level" if is_held_out.any() else None)
    fig.suptitle(f"{title}: figures per phi level, exported generator vs validation MC")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_eval_levels(eval_log, title, path):
    import matplotlib.pyplot as plt

    fig, (rate_axis, score_axis) = plt.subplots(1, 2, figsize=(13, 4.2))
    is_ema = eval_log["generator"] == "ema"
    for index, phi_gv in enumerate(np.unique(eval_log["phi_gv"])):
        rows = is_ema & (eval_log["phi_gv"] == phi_gv)
        held_out = bool(eval_log["held_out"][rows][0])
        color = f"C{index}"
        label = f"phi {phi_gv:g} GV" + (" (held out)" if held_out else "")
        rate_axis.plot(eval_log["step"][rows], eval_log["events_per_chunk_generated"][rows],
                       "o-" if not held_out else "s--", color=color, label=label)
        rate_axis.axhline(eval_log["events_per_chunk_mc"][rows][0], color=color, lw=0.8, ls=":")
        score_axis.plot(eval_log["step"][rows], eval_log["score"][rows],
                        "o-" if not held_out else "s--", color=color, label=label)
    rate_axis.set_ylabel("events per chunk (dotted: MC)")
    score_axis.set_ylabel("selection score per level (lower is better)")
    for axis in (rate_axis, score_axis):
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
        axis.legend(fontsize="small")
    fig.suptitle(f"{title}: EMA generator per phi level during training")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
