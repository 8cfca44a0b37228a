"""The shipped default bundle: it reloads, runs through the production path, and its
output statistics sit within stated bounds of the MC it was trained on.

The MC figures come from the bundle's card (``validation.figures.*.reference``),
measured by crab-train on 2000 held-out MC chunks (whole MC runs never seen in
training). The generated figures here come from fresh latents drawn with toast.rng,
the path InjectCRAB uses, so they also check that the card describes this file.

Bounds, fixed before the model was trained and meant to catch a broken or mislabelled
model, not to certify quality (docs/training.md and the validation report do that):

* mean and robust sigma of the samples within 25 % of the MC: the wafer continuum
  sets both, and a GAN that learned the continuum gets them to ~10 %;
* RMS within a factor 1.5: the RMS is dominated by the rare large glitches, which
  the CRAB recipe is known to under-produce;
* fraction of samples beyond 5 robust sigma of the MC within a factor 4 of the MC.
"""

import numpy as np
import pytest

from toast_crab.bundle import default_bundle_path, load_bundle
from toast_crab.generation import ChunkGenerator, draw_latents, stream_keys

N_CHUNKS = 500


@pytest.fixture(scope="module")
def bundle():
    return load_bundle(None)


@pytest.fixture(scope="module")
def generated_w(bundle):
    generator = ChunkGenerator(bundle, batch_size=256)
    keys = [stream_keys(0, 101, 202, 303)] * N_CHUNKS
    latents = draw_latents(keys, list(range(N_CHUNKS)), bundle.latent_shape[0])
    return generator.generate_chunks(latents)


@pytest.fixture(scope="module")
def mc(bundle):
    return {name: entry["reference"] for name, entry in _figures(bundle).items()
            if isinstance(entry, dict) and "reference" in entry}


def _figures(bundle):
    return bundle.card["validation"]["figures"]


def _robust_sigma(x):
    return 1.4826 * np.median(np.abs(x - np.median(x)))


def test_default_bundle_is_trained_on_mc(bundle):
    card = bundle.card
    assert bundle.keras_path == default_bundle_path()
    assert card["name"] == "crab_default"
    assert card["family"] == "crab_bce"
    assert card["sample_rate_hz"] == pytest.approx(19.1)
    assert card["chunk_length"] == 1060
    assert card["training"]["adversarial_steps"] > 0
    assert "mc_train" in card["training_data"]["path"]
    assert card["training_data"]["n_chunks_train"] > 10000


def test_default_output_shape_and_finite(generated_w):
    assert generated_w.shape == (N_CHUNKS, 1060)
    assert np.all(np.isfinite(generated_w))


def test_default_mean_within_bounds(generated_w, mc):
    assert generated_w.mean() == pytest.approx(mc["mean_w"], rel=0.25)


def test_default_robust_sigma_within_bounds(generated_w, mc):
    assert _robust_sigma(generated_w) == pytest.approx(mc["robust_sigma_w"], rel=0.25)


def test_default_rms_within_bounds(generated_w, mc):
    ratio = np.sqrt(np.mean(generated_w**2)) / mc["rms_w"]
    assert 1 / 1.5 < ratio < 1.5


def test_default_tail_fraction_within_bounds(generated_w, mc, bundle):
    threshold_w = _figures(bundle)["tail_threshold_w"]
    fraction = np.mean(np.abs(generated_w - mc["median_w"]) > threshold_w)
    ratio = fraction / mc["fraction_beyond_5_sigma"]
    assert 0.25 < ratio < 4.0


def test_default_matches_its_card(generated_w, bundle):
    # The card's generated figures used 2000 chunks from other latents. The sampling
    # error of a mean over 5e5 correlated samples is ~0.3 % here, so 3 % only fails
    # when the card describes another model.
    card_generated = {name: entry["generated"] for name, entry in _figures(bundle).items()
                      if isinstance(entry, dict) and "generated" in entry}
    assert generated_w.mean() == pytest.approx(card_generated["mean_w"], rel=0.03)
    assert _robust_sigma(generated_w) == pytest.approx(card_generated["robust_sigma_w"], rel=0.03)
