"""The shipped default bundle: it reloads, runs through the production path, and its
output statistics sit within stated bounds of the MC it was validated on.

The MC figures come from the bundle's card (``validation.figures.*.reference``),
measured by crab-train on held-out MC chunks (whole MC runs, or a whole flux level,
never seen in training). The generated figures here come from fresh latents drawn
with toast.rng through the generator runner InjectCRAB uses, so they also check that
the card describes this file. A flux-conditioned default runs at the card's
``validation.figures_level_gv``.

Bounds, meant to catch a broken or mislabelled model, not to certify quality
(docs/training.md and the validation report do that):

* mean and robust sigma of the samples within 25 % of the MC: the wafer continuum
  sets both, and a GAN that learned the continuum gets them to ~10 %;
* RMS within a factor 1.5: the RMS is dominated by the rare large glitches;
* fraction of samples beyond 5 robust sigma of the MC within a factor 4 of the MC.

The older CRAB BCE model ``crab_default`` stays shipped as the reference to beat, and
is checked with the same bounds.
"""

import numpy as np
import pytest

import os

from toast_crab.bundle import default_bundle_path, load_bundle, network_condition
from toast_crab.generation import StreamRequest, make_generator, stream_keys

N_CHUNKS = 500
CHUNK_LENGTH = 1060
CRAB_DEFAULT = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    "toast_crab", "data", "models", "crab_default.keras",
)


@pytest.fixture(scope="module", params=["default", "crab_default"])
def bundle(request):
    return load_bundle(None if request.param == "default" else CRAB_DEFAULT)


def _condition(bundle):
    if not bundle.conditioning:
        return ()
    return network_condition(bundle.card, bundle.card["validation"]["figures_level_gv"])


@pytest.fixture(scope="module")
def generated_w(bundle):
    # One 1060-sample piece per stream, as crab-validate cuts generated sets.
    generator = make_generator(bundle, batch_size=64)
    condition = _condition(bundle)
    requests = [
        StreamRequest(stream_keys(0, 101, 202, 303 + index), 0, CHUNK_LENGTH, condition)
        for index in range(N_CHUNKS)
    ]
    chunks = np.zeros((N_CHUNKS, CHUNK_LENGTH))
    for row, offset, values in generator.iter_segments(requests):
        chunks[row, offset : offset + values.size] = values
    return chunks


@pytest.fixture(scope="module")
def mc(bundle):
    return {name: entry["reference"] for name, entry in _figures(bundle).items()
            if isinstance(entry, dict) and "reference" in entry}


def _figures(bundle):
    return bundle.card["validation"]["figures"]


def _robust_sigma(x):
    return 1.4826 * np.median(np.abs(x - np.median(x)))


def test_default_path_is_the_seamless_model():
    card = load_bundle(None).card
    assert default_bundle_path().endswith(os.path.join("default_model", "seamless.keras"))
    assert card["family"] == "seamless"
    assert card["conditioning"]["phi_gv"]["range"] == [0.3, 0.75]


def test_default_bundle_is_trained_on_mc(bundle):
    card = bundle.card
    assert card["sample_rate_hz"] == pytest.approx(19.1)
    data = card["training_data"]
    paths = [entry["path"] for entry in data["files"]] if "files" in data else [data["path"]]
    assert all("mc_" in os.path.basename(path) for path in paths)
    assert data["n_chunks_train"] > 10000


def test_default_output_shape_and_finite(generated_w):
    assert generated_w.shape == (N_CHUNKS, CHUNK_LENGTH)
    assert np.all(np.isfinite(generated_w))


def test_default_mean_within_bounds(generated_w, mc):
    assert generated_w.mean() == pytest.approx(mc["mean_w"], rel=0.25)


def test_default_robust_sigma_within_bounds(generated_w, mc):
    assert _robust_sigma(generated_w) == pytest.approx(mc["robust_sigma_w"], rel=0.25)


def test_default_rms_within_bounds(generated_w, mc):
    ratio = np.sqrt(np.mean(generated_w**2)) / mc["rms_w"]
    assert 1 / 1.5 < ratio < 1.5


def test_default_tail_fraction_within_bounds(generated_w, mc, bundle):
    # compare_chunks puts the tail threshold at 5 robust sigma of the MC.
    threshold_w = _figures(bundle).get("tail_threshold_w", 5.0 * mc["robust_sigma_w"])
    fraction = np.mean(np.abs(generated_w - mc["median_w"]) > threshold_w)
    ratio = fraction / mc["fraction_beyond_5_sigma"]
    assert 0.25 < ratio < 4.0


def test_default_matches_its_card(generated_w, bundle):
    # The card's generated figures used 1000-2000 chunks from other latents. The sampling
    # error of a mean over 5e5 correlated samples is ~0.3 % here, so 3 % only fails
    # when the card describes another model.
    card_generated = {name: entry["generated"] for name, entry in _figures(bundle).items()
                      if isinstance(entry, dict) and "generated" in entry}
    assert generated_w.mean() == pytest.approx(card_generated["mean_w"], rel=0.03)
    assert _robust_sigma(generated_w) == pytest.approx(card_generated["robust_sigma_w"], rel=0.03)
