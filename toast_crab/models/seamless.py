"""Fully convolutional generator and patch critic of the ``seamless`` family.

The generator maps a latent *sequence* to a timestream of any length. It is built
only from 'same'-padded ``Conv1D`` layers, ``UpSampling1D`` layers and pointwise
operations, so every output sample depends on a fixed window of nearby latent
positions. It does not depend on the sequence length, on the position in the
sequence or on the other members of the batch. Two generator passes over
overlapping latent sequences therefore agree sample by sample away from the
sequence ends, and a whole observation comes out of one pass without chunk seams.

The halo ``H`` is the receptive-field half-width in latent positions: output sample
``t`` depends only on latent positions ``j`` with ``|j - t // S| <= H``, where ``S``
is the latent stride (samples per latent position). :func:`halo_latents` computes
``H`` from the layers of a built generator.

An optional condition vector (for example the normalised solar modulation potential
phi) enters every resolution level of the generator and the first level of the
critic as constant channels (:class:`ConditionBroadcast`).
"""

import keras
from keras import layers, ops

from .wgan import FirstDifference, MinibatchStddev

__all__ = [
    "ConditionBroadcast",
    "build_seamless_critic",
    "build_seamless_generator",
    "halo_latents",
    "latent_stride",
]

_LEAKY_SLOPE = 0.2

# Layers that act on each time step alone, so they do not widen the receptive field.
_POINTWISE_LAYERS = ("InputLayer", "LeakyReLU", "Activation", "ConditionBroadcast", "Reshape")


@keras.saving.register_keras_serializable(package="toast_crab")
class ConditionBroadcast(layers.Layer):
    """Append a per-sequence condition vector as constant channels at every time step.

    Input shape: ``[(batch, length, channels), (batch, n_conditions)]``.
    Output shape: ``(batch, length, channels + n_conditions)``.
    """

    def call(self, inputs):
        features, condition = inputs
        length = ops.shape(features)[1]
        tiled = ops.repeat(ops.expand_dims(condition, 1), length, axis=1)
        return ops.concatenate([features, ops.cast(tiled, features.dtype)], axis=-1)

    def compute_output_shape(self, input_shape):
        features_shape, condition_shape = input_shape
        return tuple(features_shape[:-1]) + (features_shape[-1] + condition_shape[-1],)


def _check_positive_int(key, value):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{key} must be an int. Got {value!r} of type {type(value).__name__}.")
    if value <= 0:
        raise ValueError(f"{key} must be positive. Got {value!r}.")


def _check_filters(filters):
    if not isinstance(filters, (list, tuple)) or not filters:
        raise TypeError(f"filters must be a non-empty list of ints. Got {filters!r}.")
    for value in filters:
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"filters must contain positive ints. Got {filters!r}.")


def _with_condition(x, condition, name):
    if condition is None:
        return x
    return ConditionBroadcast(name=name)([x, condition])


def build_seamless_generator(
    latent_channels=16,
    filters=(64, 48, 32),
    kernel_size=9,
    n_conditions=0,
    name="seamless_generator",
):
    """Build the fully convolutional generator: latent sequence to timestream.

    Level 0 works at the latent rate; each further level starts with
    ``UpSampling1D(2)``, so the latent stride is ``S = 2 ** (len(filters) - 1)``.
    Every level is ``[condition channels] -> Conv1D -> LeakyReLU(0.2) -> Conv1D ->
    LeakyReLU(0.2)`` with ``filters[level]`` filters, and a linear
    ``Conv1D(1, kernel_size)`` makes the output. There is no normalization layer.

    Input shapes: ``latents`` ``(batch, n_latent, latent_channels)`` float32,
    standard normal; with ``n_conditions > 0`` also ``condition``
    ``(batch, n_conditions)`` float32, normalised condition values.
    Output shape: ``(batch, n_latent * S)`` float32, asinh network space.

    Args:
        latent_channels (int): Channels of the latent sequence.
        filters (tuple): Filters per resolution level, latent rate first.
        kernel_size (int): Kernel size of every convolution; odd.
        n_conditions (int): Length of the condition vector; 0 builds an
            unconditioned generator with the single input ``latents``.
        name (str): Model name.

    Returns:
        (keras.Model): The generator.

    Raises:
        TypeError: If a size is not an int or ``filters`` is not a list of ints.
        ValueError: If a size is out of range or ``kernel_size`` is even.
    """
    _check_positive_int("latent_channels", latent_channels)
    _check_positive_int("kernel_size", kernel_size)
    _check_filters(filters)
    if isinstance(n_conditions, bool) or not isinstance(n_conditions, int) or n_conditions < 0:
        raise ValueError(f"n_conditions must be an int >= 0. Got {n_conditions!r}.")
    if kernel_size % 2 == 0:
        raise ValueError(
            f"kernel_size must be odd, so the receptive field is symmetric. Got {kernel_size}."
        )

    latents = keras.Input(shape=(None, latent_channels), name="latents")
    inputs = [latents]
    condition = None
    if n_conditions > 0:
        condition = keras.Input(shape=(n_conditions,), name="condition")
        inputs.append(condition)

    x = latents
    for level, width in enumerate(filters):
        if level > 0:
            x = layers.UpSampling1D(2, name=f"level{level}_upsample")(x)
        x = _with_condition(x, condition, f"level{level}_condition")
        for index in (1, 2):
            x = layers.Conv1D(width, kernel_size, padding="same", name=f"level{level}_conv{index}")(x)
            x = layers.LeakyReLU(negative_slope=_LEAKY_SLOPE, name=f"level{level}_act{index}")(x)
    x = layers.Conv1D(1, kernel_size, padding="same", name="output_conv")(x)
    timestream = layers.Reshape((-1,), name="timestream")(x)
    return keras.Model(inputs, timestream, name=name)


def latent_stride(generator):
    """Return the samples per latent position of a seamless generator (int)."""
    stride = 1
    for layer in generator.layers:
        if isinstance(layer, layers.UpSampling1D):
            stride *= int(layer.size)
    return stride


def halo_latents(generator):
    """Compute the receptive-field half-width ``H`` of a generator in latent positions.

    The function follows the layers from the output back to the latents and tracks,
    for each output sample ``t`` in one stride period, the range of positions it
    depends on. A 'same' ``Conv1D`` with kernel ``k`` and dilation ``d`` widens the
    range by ``d * ((k - 1) // 2)`` on the left and ``d * (k // 2)`` on the right;
    ``UpSampling1D(n)`` maps position ``u`` to ``u // n``. ``H`` is the largest
    distance of that range from ``t // S``.

    Args:
        generator (keras.Model): A generator from :func:`build_seamless_generator`
            (or any chain of the supported layers).

    Returns:
        (int): ``H``, the smallest integer with no dependence beyond ``H``
        latent positions.

    Raises:
        ValueError: If the generator contains a layer that is not 'same'-padded
            ``Conv1D``, ``UpSampling1D`` or a pointwise layer, since such a layer
            can make outputs depend on the whole sequence.
    """
    steps = []
    for layer in generator.layers:
        kind = type(layer).__name__
        if isinstance(layer, layers.Conv1D) and not isinstance(layer, layers.Conv1DTranspose):
            if layer.padding != "same" or int(layer.strides[0]) != 1:
                raise ValueError(
                    f"Layer {layer.name!r} must be a stride-1 'same' Conv1D. Got padding "
                    f"{layer.padding!r}, strides {layer.strides}."
                )
            k = int(layer.kernel_size[0])
            d = int(layer.dilation_rate[0])
            steps.append(("conv", d * ((k - 1) // 2), d * (k // 2)))
        elif isinstance(layer, layers.UpSampling1D):
            steps.append(("upsample", int(layer.size), 0))
        elif kind not in _POINTWISE_LAYERS:
            raise ValueError(
                f"Layer {layer.name!r} of type {kind} is not allowed in a seamless "
                f"generator; use Conv1D, UpSampling1D or pointwise layers {_POINTWISE_LAYERS}."
            )

    stride = latent_stride(generator)
    halo = 0
    for t in range(stride):
        low, high = t, t
        for kind, first, second in reversed(steps):
            if kind == "conv":
                low, high = low - first, high + second
            else:
                low, high = low // first, high // first
        halo = max(halo, -low, high)
    return halo


def build_seamless_critic(
    filters=(32, 64, 64), kernel_size=9, n_conditions=0, name="seamless_critic"
):
    """Build the patch critic: a timestream to one logit per patch.

    The timestream and its first difference form two input channels (spikes of
    1-3 samples stand out in the difference). Condition channels are appended,
    then stride-2 ``Conv1D`` blocks with LeakyReLU(0.2), one per entry of
    ``filters``, a minibatch standard deviation channel, a ``Conv1D(filters[-1],
    3)`` block and a pointwise ``Conv1D(1, 1)`` give one unbounded logit per patch
    of about ``2 ** len(filters)`` samples. Nothing pools over time, so the input
    length is free.

    Input shapes: ``timestream`` ``(batch, length)`` float32, network space, with
    ``length`` a multiple of ``2 ** len(filters)``; with ``n_conditions > 0`` also
    ``condition`` ``(batch, n_conditions)`` float32.
    Output shape: ``(batch, length // 2 ** len(filters))`` float32, logits.

    Args:
        filters (tuple): Filters of the stride-2 blocks.
        kernel_size (int): Kernel size of the stride-2 convolutions.
        n_conditions (int): Length of the condition vector; 0 for none.
        name (str): Model name.

    Returns:
        (keras.Model): The critic.

    Raises:
        TypeError: If a size is not an int or ``filters`` is not a list of ints.
        ValueError: If a size is out of range.
    """
    _check_positive_int("kernel_size", kernel_size)
    _check_filters(filters)
    if isinstance(n_conditions, bool) or not isinstance(n_conditions, int) or n_conditions < 0:
        raise ValueError(f"n_conditions must be an int >= 0. Got {n_conditions!r}.")

    timestream = keras.Input(shape=(None,), name="timestream")
    inputs = [timestream]
    condition = None
    if n_conditions > 0:
        condition = keras.Input(shape=(n_conditions,), name="condition")
        inputs.append(condition)

    x = layers.Reshape((-1, 1), name="channels")(timestream)
    x = layers.Concatenate(name="with_difference")([x, FirstDifference(name="first_difference")(x)])
    x = _with_condition(x, condition, "critic_condition")
    for index, width in enumerate(filters, start=1):
        x = layers.Conv1D(width, kernel_size, strides=2, padding="same", name=f"conv{index}")(x)
        x = layers.LeakyReLU(negative_slope=_LEAKY_SLOPE, name=f"conv{index}_act")(x)
    x = MinibatchStddev(name="minibatch_stddev")(x)
    x = layers.Conv1D(filters[-1], 3, padding="same", name="head_conv")(x)
    x = layers.LeakyReLU(negative_slope=_LEAKY_SLOPE, name="head_conv_act")(x)
    x = layers.Conv1D(1, 1, name="patch_logit")(x)
    logits = layers.Reshape((-1,), name="patch_logits")(x)
    return keras.Model(inputs, logits, name=name)
