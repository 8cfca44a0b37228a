"""Basic checks of the CRAB network builders: sizes, shapes, serialization."""

import keras
import numpy as np
import pytest

from toast_crab.models import (
    CRAB_DISCRIMINATOR_PARAMS,
    CRAB_GENERATOR_PARAMS,
    build_crab_discriminator,
    build_crab_generator,
)


def test_generator_param_count():
    generator = build_crab_generator()
    assert generator.count_params() == CRAB_GENERATOR_PARAMS == 33_766


def test_discriminator_param_count():
    discriminator = build_crab_discriminator()
    assert discriminator.count_params() == CRAB_DISCRIMINATOR_PARAMS == 10_785


def test_generator_output_shape():
    generator = build_crab_generator()
    assert generator.input_shape == (None, 100)
    latents = np.random.default_rng(np.random.SeedSequence(1)).standard_normal((3, 100))
    chunks = generator(latents.astype(np.float32), training=False)
    assert tuple(chunks.shape) == (3, 1060)


def test_discriminator_output_shape():
    discriminator = build_crab_discriminator()
    chunks = np.zeros((5, 1060), dtype=np.float32)
    logits = discriminator(chunks, training=False)
    assert tuple(logits.shape) == (5, 1)


def test_networks_other_chunk_length():
    generator = build_crab_generator(latent_dim=16, chunk_length=400)
    discriminator = build_crab_discriminator(chunk_length=400)
    chunks = generator(np.zeros((2, 16), dtype=np.float32), training=False)
    assert tuple(chunks.shape) == (2, 400)
    assert tuple(discriminator(chunks).shape) == (2, 1)


def test_generator_reload_identical(tmp_path):
    generator = build_crab_generator()
    # Nonzero batch-norm statistics, so that inference differs from a fresh model.
    rng = np.random.default_rng(np.random.SeedSequence(2))
    for layer in generator.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            size = layer.moving_mean.shape
            layer.moving_mean.assign(rng.normal(0.0, 0.5, size).astype(np.float32))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, size).astype(np.float32))
    path = tmp_path / "generator.keras"
    generator.save(path)
    reloaded = keras.saving.load_model(path, compile=False)
    latents = rng.standard_normal((4, 100)).astype(np.float32)
    expected = np.asarray(generator(latents, training=False))
    actual = np.asarray(reloaded(latents, training=False))
    np.testing.assert_array_equal(actual, expected)


def test_generator_rejects_bad_length():
    with pytest.raises(ValueError, match="multiple of 4.*Got 1061; use 1060 or 1064"):
        build_crab_generator(chunk_length=1061)


def test_builders_reject_bad_sizes():
    with pytest.raises(TypeError, match="latent_dim must be an int. Got 100.0"):
        build_crab_generator(latent_dim=100.0)
    with pytest.raises(ValueError, match="chunk_length must be positive. Got 0"):
        build_crab_discriminator(chunk_length=0)
