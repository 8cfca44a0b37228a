"""Critic for the WGAN-GP recipe, with a first-difference branch and minibatch stddev.

The critic follows the habits of the time-domain glitch GANs trained with a
Wasserstein loss and gradient penalty (Gulrajani et al. 2017, arXiv:1704.00028):

* No batch normalization, because the gradient penalty constrains the critic one
  sample at a time. The convolution blocks use LayerNormalization over channels.
* A second convolution branch sees the first difference ``x[t+1] - x[t]`` of the
  chunk, as the derivative critic of cDVGAN (Dooney et al. 2024, arXiv:2401.16356).
  Spikes that last 1-3 samples at 19.1 Hz stand out in the difference.
* A minibatch standard deviation channel before the head (Karras et al. 2018,
  arXiv:1710.10196), so a generator that emits near-identical chunks is easy to
  reject.
* Global average and max pooling in the head, so the chunk length is free and one
  large event per chunk is visible to the head.

The generator of the ``wgan_gp`` family is the CRAB generator
(:func:`toast_crab.models.build_crab_generator`).
"""

import keras
from keras import layers, ops

__all__ = ["FirstDifference", "MinibatchStddev", "build_wgan_critic"]

_LEAKY_SLOPE = 0.2


@keras.saving.register_keras_serializable(package="toast_crab")
class FirstDifference(layers.Layer):
    """First difference along time, ``d[t] = x[t] - x[t-1]`` with ``d[0] = 0``.

    The zero in front keeps the length, so the difference branch lines up sample
    by sample with the chunk.

    Input shape: ``(batch, length, channels)``.
    Output shape: ``(batch, length, channels)``.
    """

    def call(self, inputs):
        difference = inputs[:, 1:, :] - inputs[:, :-1, :]
        return ops.pad(difference, [[0, 0], [1, 0], [0, 0]])

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="toast_crab")
class MinibatchStddev(layers.Layer):
    """Append the mean over features of the standard deviation over the batch.

    For each time step and channel the layer takes the standard deviation over the
    batch, averages it over time and channels into one number, and appends that
    number as a constant extra channel (Karras et al. 2018, arXiv:1710.10196).

    Input shape: ``(batch, length, channels)``.
    Output shape: ``(batch, length, channels + 1)``.

    Args:
        epsilon (float): Added to the variance before the square root, so the
            gradient stays finite for a batch of identical inputs.
    """

    def __init__(self, epsilon=1e-8, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)

    def call(self, inputs):
        variance = ops.var(inputs, axis=0)
        stddev = ops.mean(ops.sqrt(variance + self.epsilon))
        shape = ops.shape(inputs)
        feature = ops.ones((shape[0], shape[1], 1), dtype=inputs.dtype) * stddev
        return ops.concatenate([inputs, feature], axis=-1)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (input_shape[-1] + 1,)

    def get_config(self):
        config = super().get_config()
        config["epsilon"] = self.epsilon
        return config


def _check_filters(filters):
    if not isinstance(filters, (list, tuple)) or not filters:
        raise TypeError(f"filters must be a non-empty list of ints. Got {filters!r}.")
    for value in filters:
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"filters must contain positive ints. Got {filters!r}.")


def _conv_branch(x, filters, kernel_size, prefix):
    # Stride 2 in every block: the branch output is about length / 2**len(filters).
    for index, width in enumerate(filters, start=1):
        x = layers.Conv1D(
            width, kernel_size, strides=2, padding="same", name=f"{prefix}_conv{index}"
        )(x)
        x = layers.LeakyReLU(negative_slope=_LEAKY_SLOPE, name=f"{prefix}_conv{index}_act")(x)
        x = layers.LayerNormalization(name=f"{prefix}_conv{index}_ln")(x)
    return x


def build_wgan_critic(chunk_length=1060, filters=(16, 32, 32), kernel_size=9, name="wgan_critic"):
    """Build the WGAN-GP critic: one chunk in network space to one score.

    Two branches of stride-2 Conv1D blocks (LeakyReLU(0.2) and LayerNormalization
    after each) see the chunk and its first difference. Their outputs are
    concatenated along channels, a minibatch standard deviation channel is
    appended, and a Conv1D block (``filters[-1]`` filters, kernel 5) feeds global
    average and global max pooling, then Dense(1). The score is unbounded, as a
    Wasserstein critic needs.

    Input shape: ``(batch, chunk_length)`` float32, network space.
    Output shape: ``(batch, 1)`` float32, critic score (higher means "real").

    Args:
        chunk_length (int): Samples per input chunk; at least ``2**len(filters)``.
        filters (tuple): Filters of the Conv1D blocks of each branch.
        kernel_size (int): Kernel size of the branch convolutions.
        name (str): Model name.

    Returns:
        (keras.Model): The critic; 38,913 parameters for chunk_length 1060 and
        the default filters.

    Raises:
        TypeError: If a size is not an int or ``filters`` is not a list of ints.
        ValueError: If a size is not positive, or the chunk is too short for the
            number of stride-2 blocks.
    """
    for key, value in (("chunk_length", chunk_length), ("kernel_size", kernel_size)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{key} must be an int. Got {value!r} of type {type(value).__name__}.")
        if value <= 0:
            raise ValueError(f"{key} must be positive. Got {value!r}.")
    _check_filters(filters)
    if chunk_length < 2 ** len(filters):
        raise ValueError(
            f"chunk_length {chunk_length} is too short for {len(filters)} stride-2 blocks; "
            f"use chunk_length >= {2 ** len(filters)} or fewer filters."
        )

    chunk = keras.Input(shape=(chunk_length,), name="chunk")
    x = layers.Reshape((chunk_length, 1), name="chunk_reshape")(chunk)
    difference = FirstDifference(name="first_difference")(x)
    x = _conv_branch(x, filters, kernel_size, "chunk")
    difference = _conv_branch(difference, filters, kernel_size, "difference")
    x = layers.Concatenate(name="branches")([x, difference])
    x = MinibatchStddev(name="minibatch_stddev")(x)
    x = layers.Conv1D(filters[-1], 5, padding="same", name="head_conv")(x)
    x = layers.LeakyReLU(negative_slope=_LEAKY_SLOPE, name="head_conv_act")(x)
    pooled = layers.Concatenate(name="pooled")(
        [layers.GlobalAveragePooling1D(name="mean_pool")(x),
         layers.GlobalMaxPooling1D(name="max_pool")(x)]
    )
    score = layers.Dense(1, name="score")(pooled)
    return keras.Model(chunk, score, name=name)
