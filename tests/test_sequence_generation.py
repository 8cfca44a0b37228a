"""Sequence (seamless) generators: block-wise inference, bundle checks, InjectCRAB."""

import os

import numpy as np
import pytest
from astropy import units as u

from helpers import (
    TINY_SEQUENCE_HALO,
    create_comm,
    create_satellite_data,
    edit_card,
    write_tiny_bundle,
    write_tiny_seamless_bundle,
)
from toast_crab.bundle import BundleError, load_bundle, read_card
from toast_crab.generation import SequenceGenerator, StreamRequest, make_generator, stream_keys
from toast_crab.ops import InjectCRAB


@pytest.fixture(scope="module")
def seq_path(tmp_path_factory):
    return write_tiny_seamless_bundle(tmp_path_factory.mktemp("seq"))


@pytest.fixture(scope="module")
def cond_path(tmp_path_factory):
    return write_tiny_seamless_bundle(tmp_path_factory.mktemp("cond"), conditioned=True)


@pytest.fixture
def data():
    data = create_satellite_data(create_comm(None), n_pix=1, n_obs=2, obs_minutes=2.0)
    yield data
    data.clear()


def _collect(generator, requests):
    out = [np.zeros(request.n_samples) for request in requests]
    for index, offset, values in generator.iter_segments(requests):
        out[index][offset : offset + values.size] += values
    return out


def _copy(data, key):
    return {(ob.name, str(det)): np.array(ob.detdata[key][det])
            for ob in data.obs for det in ob.local_detectors}


# ---------------------------------------------------------------- block-wise inference


@pytest.mark.parametrize("block_latents, batch_size", [(3, 2), (8, 3), (40, 1)])
def test_blocks_equal_one_pass(seq_path, block_latents, batch_size):
    bundle = load_bundle(seq_path)
    generator = SequenceGenerator(bundle, batch_size=batch_size, block_latents=block_latents)
    keys = stream_keys(2, 11, 12, 13)
    whole = generator.one_pass(keys, 1500)
    # A request starting inside a block, and one covering the start of the session.
    late, early = _collect(
        generator, [StreamRequest(keys, 101, 1399), StreamRequest(keys, 0, 77)]
    )
    # Same latents, same local arithmetic: TensorFlow's CPU convolutions give the same
    # bits for every sequence length (checked here), so equality is exact.
    np.testing.assert_array_equal(late, whole[101:])
    np.testing.assert_array_equal(early, whole[:77])
    assert np.std(whole) > 0


def test_blocks_agree_across_block_sizes(seq_path):
    bundle = load_bundle(seq_path)
    keys = stream_keys(0, 1, 2, 3)
    request = [StreamRequest(keys, 500, 3000)]
    (small,) = _collect(SequenceGenerator(bundle, batch_size=4, block_latents=5), request)
    (large,) = _collect(SequenceGenerator(bundle, batch_size=2, block_latents=300), request)
    np.testing.assert_array_equal(small, large)


def test_halo_covers_the_receptive_field(seq_path):
    # Changing one latent position must leave every output sample farther than the
    # card's halo untouched.
    bundle = load_bundle(seq_path)
    rng = np.random.default_rng(3)
    z = rng.standard_normal((1, 60, bundle.latent_shape[0])).astype(np.float32)
    base = np.asarray(bundle.generator(z))[0]
    z[0, 30] += 1.0
    changed = np.flatnonzero(np.asarray(bundle.generator(z))[0] != base)
    positions = changed // bundle.card["sequence"]["latent_stride"]
    assert changed.size > 0
    assert np.all(np.abs(positions - 30) <= TINY_SEQUENCE_HALO)


def test_streams_differ_by_key(seq_path):
    generator = SequenceGenerator(load_bundle(seq_path), batch_size=4, block_latents=16)
    a, b = _collect(generator, [StreamRequest(stream_keys(0, 1, 2, 3), 0, 800),
                                StreamRequest(stream_keys(0, 1, 2, 4), 0, 800)])
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.2


def test_make_generator_picks_the_kind(seq_path, tmp_path):
    assert isinstance(make_generator(load_bundle(seq_path), batch_size=2), SequenceGenerator)
    chunk = load_bundle(write_tiny_bundle(tmp_path))
    assert not isinstance(make_generator(chunk, batch_size=2), SequenceGenerator)


def test_block_smaller_than_halo_rejected(seq_path):
    with pytest.raises(ValueError, match="block_latents must be at least the model's halo"):
        SequenceGenerator(load_bundle(seq_path), block_latents=TINY_SEQUENCE_HALO - 1)


def test_condition_count_checked(cond_path):
    generator = SequenceGenerator(load_bundle(cond_path), batch_size=2, block_latents=8)
    with pytest.raises(ValueError, match="phi_gv.*0 condition values"):
        list(generator.iter_segments([StreamRequest(stream_keys(0, 1, 2, 3), 0, 100)]))


# ---------------------------------------------------------------- bundle checks


def _copy_bundle(path, folder, name):
    import shutil

    stem = os.path.splitext(path)[0]
    target = os.path.join(str(folder), name)
    shutil.copy(stem + ".keras", target + ".keras")
    shutil.copy(stem + ".json", target + ".json")
    return target + ".keras"


def test_card_without_sequence_rejected(seq_path, tmp_path):
    path = _copy_bundle(seq_path, tmp_path, "no_seq")
    edit_card(path, sequence=None)
    with pytest.raises(BundleError, match="lacks the 'sequence' entry"):
        read_card(path)


def test_stride_must_divide_chunk_length(seq_path, tmp_path):
    path = _copy_bundle(seq_path, tmp_path, "bad_stride")
    edit_card(path, sequence={"latent_stride": 5, "halo_latents": 3})
    with pytest.raises(BundleError, match="not a multiple of sequence.latent_stride 5"):
        read_card(path)


def test_conditioning_on_chunk_family_rejected(tmp_path):
    path = write_tiny_bundle(tmp_path)
    edit_card(path, conditioning={"phi_gv": {"unit": "GV", "offset": 0.5, "scale": 0.2,
                                             "range": [0.3, 0.75]}})
    with pytest.raises(BundleError, match="family 'crab_bce' takes no conditioning"):
        read_card(path)


def test_unknown_condition_rejected(cond_path, tmp_path):
    path = _copy_bundle(cond_path, tmp_path, "kp")
    edit_card(path, conditioning={"kp_index": {"unit": "", "offset": 0, "scale": 1,
                                               "range": [0, 9]}})
    with pytest.raises(BundleError, match=r"\['kp_index'\]; this toast_crab supports"):
        read_card(path)


def test_bad_condition_scale_rejected(cond_path, tmp_path):
    path = _copy_bundle(cond_path, tmp_path, "scale")
    edit_card(path, conditioning={"phi_gv": {"unit": "GV", "offset": 0.5, "scale": 0,
                                             "range": [0.3, 0.75]}})
    with pytest.raises(BundleError, match="positive scale.*scale=0"):
        read_card(path)


def test_card_model_mismatch_rejected(seq_path, tmp_path):
    # An unconditioned network with a card that declares a condition.
    path = _copy_bundle(seq_path, tmp_path, "mismatch")
    edit_card(path, conditioning={"phi_gv": {"unit": "GV", "offset": 0.5, "scale": 0.2,
                                             "range": [0.3, 0.75]}})
    with pytest.raises(BundleError, match="takes 1 inputs, but its card implies 2"):
        load_bundle(path)


# ---------------------------------------------------------------- InjectCRAB


def test_inject_seamless_matches_one_pass(seq_path, data):
    InjectCRAB(model=seq_path, det_data="cr", det_data_units=u.W, block_latents=16,
               batch_size=4).apply(data)
    bundle = load_bundle(seq_path)
    reference = SequenceGenerator(bundle, batch_size=1, block_latents=64)
    for ob in data.obs:
        for det in ob.local_detectors:
            keys = stream_keys(0, ob.telescope.uid, ob.session.uid,
                               ob.telescope.focalplane[det]["uid"])
            expected = reference.one_pass(keys, ob.n_local_samples)
            np.testing.assert_array_equal(ob.detdata["cr"][det], expected)


def test_inject_phi_from_date_equals_explicit_phi(cond_path, data):
    from toast_crab.mc.config import SolarCycleConfig

    InjectCRAB(model=cond_path, det_data="dated", block_latents=16).apply(data)
    cycle = SolarCycleConfig()
    for index, ob in enumerate(data.obs):
        phi_gv = cycle.phi_gv(ob.session.start)
        InjectCRAB(model=cond_path, det_data=f"fixed{index}", block_latents=16,
                   phi=phi_gv * u.GV).apply(data)
        for det in ob.local_detectors:
            np.testing.assert_array_equal(
                ob.detdata["dated"][det], ob.detdata[f"fixed{index}"][det]
            )


def test_inject_phi_changes_output(cond_path, data):
    InjectCRAB(model=cond_path, det_data="low", phi=0.3 * u.GV, block_latents=16).apply(data)
    InjectCRAB(model=cond_path, det_data="high", phi=0.7 * u.GV, block_latents=16).apply(data)
    low, high = _copy(data, "low"), _copy(data, "high")
    assert all(not np.array_equal(low[name], high[name]) for name in low)


def test_phi_outside_trained_range_rejected(cond_path, data):
    before = _copy(data, "signal")
    with pytest.raises(ValueError, match=r"phi = 1.2 GV lies outside the range \[0.3, 0.75\]"):
        InjectCRAB(model=cond_path, det_data="signal", phi=1.2 * u.GV).apply(data)
    after = _copy(data, "signal")
    assert all(np.array_equal(before[name], after[name]) for name in before)


def test_phi_with_unconditioned_model_rejected(seq_path, data):
    with pytest.raises(ValueError, match="InjectCRAB.phi is 0.4 GV.*not conditioned"):
        InjectCRAB(model=seq_path, det_data="cr", phi=0.4 * u.GV).apply(data)


def test_block_below_halo_rejected_before_data_change(seq_path, data):
    before = _copy(data, "signal")
    with pytest.raises(ValueError, match="block_latents is 2, below the halo of 3"):
        InjectCRAB(model=seq_path, det_data="signal", block_latents=2).apply(data)
    after = _copy(data, "signal")
    assert all(np.array_equal(before[name], after[name]) for name in before)


@pytest.mark.parametrize(
    "trait, value, message",
    [
        ("phi", 0.4 * u.K, "electric potential"),
        ("phi", -0.1 * u.GV, "phi must be >= 0 GV"),
        ("phi_date", "next spring", "not an ISO 8601 date"),
        ("block_latents", 0, "block_latents must be at least 1"),
    ],
)
def test_bad_sequence_traits_rejected(trait, value, message):
    import traitlets

    with pytest.raises(traitlets.TraitError, match=message):
        InjectCRAB(**{trait: value})
