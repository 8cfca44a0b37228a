"""Encoder, decoder and sampler of the ``vae`` family: a convolutional VAE.

The variational autoencoder (Kingma and Welling 2014, arXiv:1312.6114) works on
chunks in the asinh network space of :mod:`toast_crab.transforms`. Its latent code is
a short sequence, ``chunk_length / prod(strides)`` positions with
``latent_channels`` channels each, so a glitch can be coded where it happens. The
decoder returns a location and a scale for every sample of the chunk, and the
likelihood of a chunk is a product of Student-t densities with a fixed number of
degrees of freedom ``dof``. The Student-t loss grows with the logarithm of a large
residual, so a rare spike that the decoder misses costs a few nats. A Gaussian loss
grows with its square, which pulls the location toward a smeared average of the
spikes.

The exported generator is deterministic. It takes one flat vector of standard
normals per chunk, laid out as

* ``[0, code_dim)``: the latent code, ``code_dim = n_positions * latent_channels``,
  reshaped to ``(n_positions, latent_channels)``;
* ``[code_dim, code_dim + (dof + 1) * chunk_length)``: only in the
  "location_plus_noise" sample mode, the normals of the Student-t noise, reshaped to
  ``(dof + 1, chunk_length)``. Row 0 contains the numerators and rows 1 to ``dof``
  the normals of the chi-square denominator.

A Student-t variate with ``dof`` degrees of freedom is
``t = n_0 / sqrt((n_1**2 + ... + n_dof**2) / dof)`` for independent standard normals
``n_i``, so the noise is an exact function of the latent normals, as the
``InjectCRAB`` operator needs.
"""

import math

import keras
import numpy as np
from keras import layers, ops

__all__ = [
    "SAMPLE_MODES",
    "LatentSlice",
    "PositiveScale",
    "StudentTNoise",
    "build_vae_decoder",
    "build_vae_encoder",
    "build_vae_generator",
    "latent_code_dim",
    "student_t_log_prob",
]

# Sample modes of the exported generator: the decoder location alone, or the
# location plus scale times Student-t noise drawn from extra latent normals.
SAMPLE_MODES = ("location", "location_plus_noise")

_LEAKY_SLOPE = 0.2

# Added to the mean of squares before the square root: a batch row of zero latents
# (the padding that batched inference uses) then gives t = 0 instead of NaN. The
# chance that dof standard normals have a mean square below 1e-20 is negligible.
_DENOMINATOR_FLOOR = 1e-20


def student_t_log_prob(y, loc, scale, dof):
    """Return the elementwise log density of a Student-t distribution.

    ``log p = lgamma((dof + 1) / 2) - lgamma(dof / 2) - log(pi * dof) / 2 - log(scale)
    - (dof + 1) / 2 * log1p(((y - loc) / scale)**2 / dof)``, the density of
    ``scipy.stats.t(dof, loc, scale)``.

    Args:
        y (tensor): Values, any shape, float32.
        loc (tensor): Locations, broadcastable to ``y``.
        scale (tensor): Positive scales, broadcastable to ``y``.
        dof (float): Degrees of freedom, positive.

    Returns:
        (tensor): Log densities of the shape of ``y``, float32, nats.

    Raises:
        ValueError: If ``dof`` is not positive.
    """
    if not dof > 0:
        raise ValueError(f"Student-t dof must be positive. Got {dof!r}.")
    dof = float(dof)
    constant = math.lgamma(0.5 * (dof + 1.0)) - math.lgamma(0.5 * dof) - 0.5 * math.log(
        math.pi * dof
    )
    standardized = (y - loc) / scale
    return (
        constant
        - ops.log(scale)
        - 0.5 * (dof + 1.0) * ops.log1p(ops.square(standardized) / dof)
    )


@keras.saving.register_keras_serializable(package="toast_crab")
class LatentSlice(layers.Layer):
    """Select the entries ``[start, stop)`` of a flat latent vector.

    Input shape: ``(batch, n)`` with ``n >= stop``.
    Output shape: ``(batch, stop - start)``.

    Args:
        start (int): First entry kept.
        stop (int): One past the last entry kept.
    """

    def __init__(self, start, stop, **kwargs):
        super().__init__(**kwargs)
        if not 0 <= int(start) < int(stop):
            raise ValueError(
                f"LatentSlice requires 0 <= start < stop. Got start={start}, stop={stop}."
            )
        self.start = int(start)
        self.stop = int(stop)

    def call(self, inputs):
        return inputs[:, self.start : self.stop]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.stop - self.start)

    def get_config(self):
        config = super().get_config()
        config.update({"start": self.start, "stop": self.stop})
        return config


@keras.saving.register_keras_serializable(package="toast_crab")
class PositiveScale(layers.Layer):
    """Map any real input to a positive scale, ``softplus(x) + floor``.

    The floor keeps the likelihood finite when the decoder pushes a scale to zero.

    Input shape: any.
    Output shape: the input shape.

    Args:
        floor (float): Smallest scale, network-space units; positive.
    """

    def __init__(self, floor=1e-3, **kwargs):
        super().__init__(**kwargs)
        if not float(floor) > 0:
            raise ValueError(f"PositiveScale floor must be positive. Got {floor!r}.")
        self.floor = float(floor)

    def call(self, inputs):
        return ops.softplus(inputs) + self.floor

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config["floor"] = self.floor
        return config


@keras.saving.register_keras_serializable(package="toast_crab")
class StudentTNoise(layers.Layer):
    """Turn ``dof + 1`` standard normals per sample into one Student-t variate.

    The input is read as ``(batch, dof + 1, length)`` in row-major order. Row 0
    contains the numerators ``n_0`` and rows 1 to ``dof`` the normals whose mean
    square is the chi-square over ``dof`` in the denominator:
    ``t = n_0 / sqrt(mean(n_1**2, ..., n_dof**2))``.

    Input shape: ``(batch, (dof + 1) * length)``, standard normals.
    Output shape: ``(batch, length)``, Student-t variates with ``dof`` degrees of
    freedom, location 0 and scale 1.

    Args:
        dof (int): Degrees of freedom, a positive integer.
        length (int): Variates per row.
    """

    def __init__(self, dof, length, **kwargs):
        super().__init__(**kwargs)
        _check_positive_int("dof", dof)
        _check_positive_int("length", length)
        self.dof = int(dof)
        self.length = int(length)

    def call(self, inputs):
        normals = ops.reshape(inputs, (-1, self.dof + 1, self.length))
        mean_square = ops.mean(ops.square(normals[:, 1:, :]), axis=1)
        return normals[:, 0, :] / ops.sqrt(mean_square + _DENOMINATOR_FLOOR)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.length)

    def get_config(self):
        config = super().get_config()
        config.update({"dof": self.dof, "length": self.length})
        return config


def _check_positive_int(name, value):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int. Got {value!r} of type {type(value).__name__}.")
    if value <= 0:
        raise ValueError(f"{name} must be positive. Got {value!r}.")


def _check_sizes(chunk_length, latent_channels, strides, filters, kernel_size):
    """Check the shared builder arguments; return the number of latent positions."""
    _check_positive_int("chunk_length", chunk_length)
    _check_positive_int("latent_channels", latent_channels)
    _check_positive_int("kernel_size", kernel_size)
    for key, values in (("strides", strides), ("filters", filters)):
        if not isinstance(values, (list, tuple)) or not values:
            raise TypeError(f"{key} must be a non-empty list of ints. Got {values!r}.")
        for value in values:
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{key} must contain positive ints. Got {values!r}.")
    if len(filters) != len(strides):
        raise ValueError(
            f"filters and strides must have the same length, one entry per resampling "
            f"block. Got filters={list(filters)!r} and strides={list(strides)!r}."
        )
    factor = int(np.prod(strides))
    if chunk_length % factor:
        raise ValueError(
            f"chunk_length {chunk_length} is not a multiple of the product of strides "
            f"{list(strides)} ({factor}). Choose strides whose product divides the chunk "
            "length, e.g. [2, 2] or [5, 2, 2] for 1060 samples."
        )
    return chunk_length // factor


def latent_code_dim(chunk_length, latent_channels, strides):
    """Return the length of the flat latent code, ``chunk_length / prod(strides) * channels``.

    Raises:
        ValueError: If the product of ``strides`` does not divide ``chunk_length``.
    """
    n_positions = _check_sizes(chunk_length, latent_channels, strides, [1] * len(strides), 1)
    return n_positions * latent_channels


def build_vae_encoder(chunk_length=1060, latent_channels=4, strides=(5, 2, 2),
                      filters=(32, 32, 32), kernel_size=9, name="vae_encoder"):
    """Build the encoder: one chunk to the mean and log variance of its latent code.

    The chunk goes through a Conv1D block at full resolution (``filters[0]``
    filters) and one Conv1D block per entry of ``strides`` (``filters[i]`` filters,
    stride ``strides[i]``), each with LeakyReLU(0.2). Two Conv1D heads of
    ``latent_channels`` filters then give the mean and the log variance at each
    latent position.

    Input shape: ``(batch, chunk_length)`` float32, network space.
    Output shape: two ``(batch, code_dim)`` float32 tensors, the posterior mean and
    log variance, with ``code_dim = chunk_length / prod(strides) * latent_channels``
    in row-major (position, channel) order.

    Args:
        chunk_length (int): Samples per chunk; a multiple of ``prod(strides)``.
        latent_channels (int): Latent channels per latent position.
        strides (tuple): Downsampling factor of each Conv1D block.
        filters (tuple): Filters of each Conv1D block; as long as ``strides``.
        kernel_size (int): Kernel size of every convolution.
        name (str): Model name.

    Returns:
        (keras.Model): The encoder.

    Raises:
        TypeError: If a size is not an int or a list is not a list of ints.
        ValueError: If a size is not positive, the lists differ in length, or
            ``prod(strides)`` does not divide ``chunk_length``.
    """
    n_positions = _check_sizes(chunk_length, latent_channels, strides, filters, kernel_size)
    code_dim = n_positions * latent_channels

    chunk = keras.Input(shape=(chunk_length,), name="chunk")
    x = layers.Reshape((chunk_length, 1), name="chunk_reshape")(chunk)
    x = layers.Conv1D(filters[0], kernel_size, padding="same", name="input_conv")(x)
    x = layers.LeakyReLU(negative_slope=_LEAKY_SLOPE, name="input_conv_act")(x)
    for index, (width, stride) in enumerate(zip(filters, strides), start=1):
        x = layers.Conv1D(
            width, kernel_size, strides=stride, padding="same", name=f"down{index}"
        )(x)
        x = layers.LeakyReLU(negative_slope=_LEAKY_SLOPE, name=f"down{index}_act")(x)
    z_mean = layers.Conv1D(latent_channels, kernel_size, padding="same", name="mean_conv")(x)
    z_log_var = layers.Conv1D(
        latent_channels, kernel_size, padding="same", name="log_var_conv"
    )(x)
    z_mean = layers.Reshape((code_dim,), name="z_mean")(z_mean)
    z_log_var = layers.Reshape((code_dim,), name="z_log_var")(z_log_var)
    return keras.Model(chunk, [z_mean, z_log_var], name=name)


def build_vae_decoder(chunk_length=1060, latent_channels=4, strides=(5, 2, 2),
                      filters=(32, 32, 32), kernel_size=9, min_scale=1e-3, name="vae_decoder"):
    """Build the decoder: a latent code to the location and scale of every sample.

    The code is reshaped to ``(n_positions, latent_channels)`` and goes through a
    Conv1D block (``filters[-1]`` filters), one Conv1DTranspose block per entry of
    ``strides`` in reverse order, and a Conv1D block at full resolution
    (``filters[0]`` filters), each with LeakyReLU(0.2). Two Conv1D heads of one
    filter give the location (linear) and the scale (``softplus + min_scale``).

    Input shape: ``(batch, code_dim)`` float32, a latent code.
    Output shape: two ``(batch, chunk_length)`` float32 tensors, the location and
    the scale of the Student-t likelihood, network space.

    Args:
        chunk_length (int): Samples per chunk; a multiple of ``prod(strides)``.
        latent_channels (int): Latent channels per latent position.
        strides (tuple): Upsampling factors, listed in encoder order.
        filters (tuple): Filters of each block, listed in encoder order.
        kernel_size (int): Kernel size of every convolution.
        min_scale (float): Floor of the scale, network-space units.
        name (str): Model name.

    Returns:
        (keras.Model): The decoder.

    Raises:
        TypeError: If a size is not an int or a list is not a list of ints.
        ValueError: If a size is not positive, the lists differ in length,
            ``prod(strides)`` does not divide ``chunk_length`` or ``min_scale`` is
            not positive.
    """
    n_positions = _check_sizes(chunk_length, latent_channels, strides, filters, kernel_size)
    code_dim = n_positions * latent_channels

    code = keras.Input(shape=(code_dim,), name="code")
    x = layers.Reshape((n_positions, latent_channels), name="code_reshape")(code)
    x = layers.Conv1D(filters[-1], kernel_size, padding="same", name="code_conv")(x)
    x = layers.LeakyReLU(negative_slope=_LEAKY_SLOPE, name="code_conv_act")(x)
    blocks = list(zip(filters, strides))[::-1]
    for index, (width, stride) in enumerate(blocks, start=1):
        x = layers.Conv1DTranspose(
            width, kernel_size, strides=stride, padding="same", name=f"up{index}"
        )(x)
        x = layers.LeakyReLU(negative_slope=_LEAKY_SLOPE, name=f"up{index}_act")(x)
    x = layers.Conv1D(filters[0], kernel_size, padding="same", name="output_conv")(x)
    x = layers.LeakyReLU(negative_slope=_LEAKY_SLOPE, name="output_conv_act")(x)
    loc = layers.Conv1D(1, kernel_size, padding="same", name="loc_conv")(x)
    scale = layers.Conv1D(1, kernel_size, padding="same", name="scale_conv")(x)
    scale = PositiveScale(min_scale, name="positive_scale")(scale)
    loc = layers.Reshape((chunk_length,), name="loc")(loc)
    scale = layers.Reshape((chunk_length,), name="scale")(scale)
    return keras.Model(code, [loc, scale], name=name)


def build_vae_generator(decoder, sample_mode="location_plus_noise", dof=4, name="vae_generator"):
    """Build the exported generator: standard normals to one chunk in network space.

    In "location" mode the generator returns the decoder location of the latent
    code. In "location_plus_noise" mode it returns ``loc + scale * t``, with ``t``
    a Student-t variate per sample made by :class:`StudentTNoise` from the normals
    after the code (see the module docstring for the layout). Both are
    deterministic functions of the input.

    Input shape: ``(batch, latent_dim_total)`` float32, standard normals, with
    ``latent_dim_total = code_dim`` ("location") or
    ``code_dim + (dof + 1) * chunk_length`` ("location_plus_noise").
    Output shape: ``(batch, chunk_length)`` float32, network space.

    Args:
        decoder (keras.Model): From :func:`build_vae_decoder`; its layers (and
            weights) are shared with the generator.
        sample_mode (str): One of ``SAMPLE_MODES``.
        dof (int): Degrees of freedom of the noise; used in
            "location_plus_noise" mode.
        name (str): Model name.

    Returns:
        (keras.Model): The generator.

    Raises:
        ValueError: If ``sample_mode`` is unknown or ``dof`` is not positive.
        TypeError: If ``dof`` is not an int.
    """
    if sample_mode not in SAMPLE_MODES:
        raise ValueError(
            f"sample_mode must be one of {list(SAMPLE_MODES)}. Got {sample_mode!r}."
        )
    code_dim = int(decoder.inputs[0].shape[-1])
    chunk_length = int(decoder.outputs[0].shape[-1])
    if sample_mode == "location":
        code = keras.Input(shape=(code_dim,), name="latent")
        loc, _ = decoder(code)
        chunk = layers.Identity(name="chunk")(loc)
        return keras.Model(code, chunk, name=name)

    _check_positive_int("dof", dof)
    noise_dim = (dof + 1) * chunk_length
    latent = keras.Input(shape=(code_dim + noise_dim,), name="latent")
    code = LatentSlice(0, code_dim, name="code")(latent)
    normals = LatentSlice(code_dim, code_dim + noise_dim, name="noise_normals")(latent)
    loc, scale = decoder(code)
    noise = StudentTNoise(dof, chunk_length, name="student_t_noise")(normals)
    chunk = layers.Add(name="chunk")([loc, layers.Multiply(name="scaled_noise")([scale, noise])])
    return keras.Model(latent, chunk, name=name)
