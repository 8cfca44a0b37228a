"""Keras builders for toast_crab generators and discriminators.

Importing this package registers every custom layer that a saved toast_crab
generator may contain, so ``keras.saving.load_model`` can rebuild it. The CRAB
networks use built-in Keras layers only. The WGAN-GP critic adds two registered
layers (``FirstDifference``, ``MinibatchStddev``), the VAE generator three
(``LatentSlice``, ``PositiveScale``, ``StudentTNoise``) and the seamless generator
one (``ConditionBroadcast``).
"""

from .crab import (
    CRAB_DISCRIMINATOR_PARAMS,
    CRAB_GENERATOR_PARAMS,
    build_crab_discriminator,
    build_crab_generator,
)
from .seamless import (
    ConditionBroadcast,
    build_seamless_critic,
    build_seamless_generator,
    halo_latents,
    latent_stride,
)
from .vae import (
    LatentSlice,
    PositiveScale,
    StudentTNoise,
    build_vae_decoder,
    build_vae_encoder,
    build_vae_generator,
)
from .wgan import FirstDifference, MinibatchStddev, build_wgan_critic

__all__ = [
    "CRAB_DISCRIMINATOR_PARAMS",
    "CRAB_GENERATOR_PARAMS",
    "build_crab_discriminator",
    "FirstDifference",
    "MinibatchStddev",
    "build_crab_generator",
    "build_wgan_critic",
    "ConditionBroadcast",
    "build_seamless_critic",
    "build_seamless_generator",
    "halo_latents",
    "latent_stride",
    "LatentSlice",
    "PositiveScale",
    "StudentTNoise",
    "build_vae_decoder",
    "build_vae_encoder",
    "build_vae_generator",
]
