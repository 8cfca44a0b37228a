"""The original CRAB generator and discriminator, rebuilt in Keras 3.

CRAB ("Cosmic Ray Artificial Background", INFN Milano-Bicocca, 2024) quotes 33,766
generator parameters and 10,785 discriminator parameters for 1060-sample outputs.
The layer list is theirs. The kernel sizes are not published, so the ones below were
chosen because they reproduce both counts exactly.

Two changes from the original, both for the heavy-tailed amplitudes of cosmic-ray
timestreams:

* The generator output is linear, in the network space of the bundle's amplitude
  transform (``asinh(x / scale_w)``). The original divided each window by its own
  peak, which throws away the absolute amplitude and needed a ``Lambda`` layer.
* The generator output is flattened to ``(chunk_length,)``, the layout of a
  training-set chunk. The discriminator takes the same layout.

Both builders return functional ``keras.Model`` objects made of built-in layers
only, so a saved generator reloads with ``keras.saving.load_model`` and no custom
objects.
"""

import keras
from keras import layers

__all__ = [
    "CRAB_DISCRIMINATOR_PARAMS",
    "CRAB_GENERATOR_PARAMS",
    "build_crab_discriminator",
    "build_crab_generator",
]

# Parameter counts of the original CRAB networks (latent_dim 100, chunk_length 1060).
CRAB_GENERATOR_PARAMS = 33_766
CRAB_DISCRIMINATOR_PARAMS = 10_785

_LEAKY_SLOPE = 0.2
_UPSAMPLING = 4  # two stride-2 transposed convolutions


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int. Got {value!r} of type {type(value).__name__}.")
    if value <= 0:
        raise ValueError(f"{name} must be positive. Got {value!r}.")


def build_crab_generator(latent_dim=100, chunk_length=1060, name="crab_generator"):
    """Build the CRAB generator: latent vector to one chunk in network space.

    Dense(latent_dim -> chunk_length / 4) and a reshape to one channel, then three
    Conv1DTranspose blocks (8 filters kernel 20 stride 1, 16 filters kernel 10
    stride 2, 32 filters kernel 10 stride 2), each followed by LeakyReLU(0.2) and
    BatchNormalization, then SeparableConv1D(1 filter, kernel 4) with a linear
    output.

    Input shape: ``(batch, latent_dim)`` float32, standard normal latents.
    Output shape: ``(batch, chunk_length)`` float32, network space of the bundle's
    amplitude transform (not watts).

    Args:
        latent_dim (int): Length of the latent vector.
        chunk_length (int): Samples per output chunk; must be a multiple of 4.
        name (str): Model name.

    Returns:
        (keras.Model): The generator; 33,766 parameters for the defaults.

    Raises:
        TypeError: If a size is not an int.
        ValueError: If a size is not positive or ``chunk_length`` is not a
            multiple of 4.
    """
    _check_positive_int("latent_dim", latent_dim)
    _check_positive_int("chunk_length", chunk_length)
    if chunk_length % _UPSAMPLING:
        raise ValueError(
            f"chunk_length must be a multiple of {_UPSAMPLING}, because the generator "
            f"upsamples {_UPSAMPLING}x from a Dense seed. Got {chunk_length}; "
            f"use {chunk_length - chunk_length % _UPSAMPLING} or "
            f"{chunk_length + _UPSAMPLING - chunk_length % _UPSAMPLING}."
        )
    seed_length = chunk_length // _UPSAMPLING

    latent = keras.Input(shape=(latent_dim,), name="latent")
    x = layers.Dense(seed_length, name="seed_dense")(latent)
    x = layers.Reshape((seed_length, 1), name="seed_reshape")(x)
    blocks = ((8, 20, 1), (16, 10, 2), (32, 10, 2))
    for index, (filters, kernel_size, strides) in enumerate(blocks, start=1):
        x = layers.Conv1DTranspose(
            filters, kernel_size, strides=strides, padding="same", name=f"deconv{index}"
        )(x)
        x = layers.LeakyReLU(negative_slope=_LEAKY_SLOPE, name=f"deconv{index}_act")(x)
        x = layers.BatchNormalization(name=f"deconv{index}_bn")(x)
    x = layers.SeparableConv1D(1, 4, padding="same", name="output_conv")(x)
    chunk = layers.Reshape((chunk_length,), name="chunk")(x)
    return keras.Model(latent, chunk, name=name)


def build_crab_discriminator(chunk_length=1060, name="crab_discriminator"):
    """Build the CRAB discriminator: one chunk in network space to one logit.

    Four Conv1D blocks (8 filters kernel 20 stride 1, 8 filters kernel 10 stride 1,
    16 filters kernel 10 stride 2, 32 filters kernel 10 stride 5, all padding
    "same"), each followed by LeakyReLU(0.2) and LayerNormalization over channels,
    then Flatten and Dense(1). The output is a logit, so pair it with a
    cross-entropy computed from logits.

    Input shape: ``(batch, chunk_length)`` float32, network space.
    Output shape: ``(batch, 1)`` float32, logit of "real".

    Args:
        chunk_length (int): Samples per input chunk.
        name (str): Model name.

    Returns:
        (keras.Model): The discriminator; 10,785 parameters for chunk_length 1060.

    Raises:
        TypeError: If ``chunk_length`` is not an int.
        ValueError: If ``chunk_length`` is not positive.
    """
    _check_positive_int("chunk_length", chunk_length)

    chunk = keras.Input(shape=(chunk_length,), name="chunk")
    x = layers.Reshape((chunk_length, 1), name="chunk_reshape")(chunk)
    blocks = ((8, 20, 1), (8, 10, 1), (16, 10, 2), (32, 10, 5))
    for index, (filters, kernel_size, strides) in enumerate(blocks, start=1):
        x = layers.Conv1D(
            filters, kernel_size, strides=strides, padding="same", name=f"conv{index}"
        )(x)
        x = layers.LeakyReLU(negative_slope=_LEAKY_SLOPE, name=f"conv{index}_act")(x)
        x = layers.LayerNormalization(name=f"conv{index}_ln")(x)
    x = layers.Flatten(name="flatten")(x)
    logit = layers.Dense(1, name="logit")(x)
    return keras.Model(chunk, logit, name=name)
