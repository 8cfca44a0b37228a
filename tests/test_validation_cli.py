"""crab-validate end to end on a tiny MC file and tiny bundles."""

import json
import os

import numpy as np
import pytest

from helpers import SAMPLE_RATE_HZ, write_tiny_bundle
from toast_crab.bundle import CARD_SCHEMA, CARD_SCHEMA_VERSION, save_bundle
from toast_crab.datasets import write_training_set
from toast_crab.mc import MCConfig, simulate_training_chunks
from toast_crab.validation.cli import main
from toast_crab.validation.sources import (
    check_bundle_compatible,
    parse_split,
)

CHUNK_LENGTH = 64


@pytest.fixture(scope="module")
def mc_file(tmp_path_factory):
    """12 MC runs of 30 chunks of 64 samples at 19.1 Hz."""
    result = simulate_training_chunks(
        MCConfig(), n_chunks=360, chunk_length=CHUNK_LENGTH, seed=77, n_runs=12
    )
    path = os.path.join(str(tmp_path_factory.mktemp("mc")), "mc_tiny.h5")
    write_training_set(path, result.chunks, result.labels, result.sample_rate_hz,
                       dict(result.provenance, command="test fixture"))
    return path


def _fixed_output_bundle(folder, name, bias_initializer):
    """Write a bundle whose output ignores the latent vector (kernel 0)."""
    import keras

    keras.utils.set_random_seed(5)
    z_in = keras.Input((8,))
    out = keras.layers.Dense(CHUNK_LENGTH, kernel_initializer="zeros",
                             bias_initializer=bias_initializer)(z_in)
    card = {
        "schema": CARD_SCHEMA,
        "schema_version": CARD_SCHEMA_VERSION,
        "name": name,
        "family": "crab_bce",
        "sample_rate_hz": SAMPLE_RATE_HZ,
        "chunk_length": CHUNK_LENGTH,
        "output_unit": "W",
        "transform": {"name": "asinh", "scale_w": 1.0e-16},
        "latent_shape": [8],
        "conditioning": {},
        "training_data": {},
        "training": {},
        "validation": {},
    }
    path = os.path.join(str(folder), f"{name}.keras")
    save_bundle(keras.Model(z_in, out), card, path)
    return path


def _run(arguments):
    return main(arguments + ["--quiet"])


def _metrics(out_dir):
    with open(os.path.join(out_dir, "metrics.json")) as handle:
        document = json.load(handle)
    return document, {m["name"]: m for m in document["panel"]["metrics"]}


def test_cli_writes_report(mc_file, tmp_path):
    bundle = write_tiny_bundle(tmp_path, chunk_length=CHUNK_LENGTH)
    out = str(tmp_path / "report")
    status = _run(["--bundle", bundle, "--mc", mc_file, "--out", out, "--n-chunks", "60",
                   "--n-calibration", "2", "--n-c2st-calibration", "1"])
    assert status == 0
    for name in ("metrics.json", "report.md", "scores.png", "timestreams.png",
                 "distributions.png", "spectra.png"):
        assert os.path.isfile(os.path.join(out, name)), name

    document, by_name = _metrics(out)
    assert document["bundles"][0]["card"]["name"] == "tiny"
    assert document["seeds"]["generator_realization"] == 0
    assert document["mc"]["provenance"]["command"] == "test fixture"
    assert "--n-chunks 60" in document["command"]
    # The card names no training file, so the split is assumed and a note records that.
    assert any("ASSUMED split_by_run" in note for note in document["notes"])
    # One held-out run of 30 chunks (10 % of 12 runs) sets the size of every set.
    assert document["mc"]["reference"]["n_chunks"] == 30
    assert by_name["c2st_accuracy"]["details"]["tiny"]["n_test"] > 0
    # A random-weight generator is far from the MC.
    assert by_name["marginal_ks"]["passed"]["tiny"] is False
    with open(os.path.join(out, "report.md")) as handle:
        report = handle.read()
    assert "| `event_rate` |" in report
    assert "**FAIL**" in report


def test_cli_constant_bundle_fails(mc_file, tmp_path):
    bundle = _fixed_output_bundle(tmp_path, "constant", "ones")
    out = str(tmp_path / "report")
    assert _run(["--bundle", bundle, "--mc", mc_file, "--out", out, "--n-calibration", "2",
                 "--no-c2st"]) == 0
    _, by_name = _metrics(out)
    for name in ("event_rate", "marginal_w1", "density", "coverage", "independence"):
        assert by_name[name]["passed"]["constant"] is False, name


def test_cli_same_chunk_bundle_fails(mc_file, tmp_path):
    bundle = _fixed_output_bundle(tmp_path, "same_chunk", "random_normal")
    out = str(tmp_path / "report")
    assert _run(["--bundle", bundle, "--mc", mc_file, "--out", out, "--n-calibration", "2",
                 "--no-c2st"]) == 0
    _, by_name = _metrics(out)
    assert by_name["independence"]["values"]["same_chunk"] == pytest.approx(1.0)
    for name in ("independence", "coverage", "seam_jump"):
        assert by_name[name]["passed"]["same_chunk"] is False, name


def test_cli_two_bundles_side_by_side(mc_file, tmp_path):
    first = write_tiny_bundle(tmp_path / "a", name="tiny", chunk_length=CHUNK_LENGTH)
    second = write_tiny_bundle(tmp_path / "b", name="tiny", chunk_length=CHUNK_LENGTH, seed=9)
    out = str(tmp_path / "report")
    assert _run(["--bundle", first, "--bundle", second, "--mc", mc_file, "--out", out,
                 "--n-calibration", "2", "--no-c2st"]) == 0
    document, by_name = _metrics(out)
    labels = [bundle["label"] for bundle in document["bundles"]]
    assert len(set(labels)) == 2
    assert set(by_name["marginal_ks"]["values"]) == set(labels)


def test_cli_fresh_mc(mc_file, tmp_path):
    bundle = write_tiny_bundle(tmp_path, chunk_length=CHUNK_LENGTH)
    out = str(tmp_path / "report")
    assert _run(["--bundle", bundle, "--mc", mc_file, "--out", out, "--n-chunks", "40",
                 "--n-calibration", "2", "--fresh-mc", "--no-c2st", "--seed", "4"]) == 0
    document, by_name = _metrics(out)
    assert document["mc"]["reference"]["n_chunks"] == 40
    assert "fresh MC" in document["mc"]["reference"]["description"]
    assert [c["label"] for c in document["mc"]["calibration"]] == ["MC set 1", "MC set 2"]
    assert len(by_name["marginal_ks"]["mc_values"]) == 3


def test_cli_other_sample_rate_rejected(mc_file, tmp_path, capsys):
    bundle = write_tiny_bundle(tmp_path, chunk_length=CHUNK_LENGTH, sample_rate_hz=31.0)
    status = _run(["--bundle", bundle, "--mc", mc_file, "--out", str(tmp_path / "r")])
    assert status == 2
    assert "trained at 31 Hz but the MC set is at 19.1 Hz" in capsys.readouterr().err


def test_cli_other_chunk_length_rejected(mc_file, tmp_path, capsys):
    bundle = write_tiny_bundle(tmp_path, chunk_length=128)
    status = _run(["--bundle", bundle, "--mc", mc_file, "--out", str(tmp_path / "r")])
    assert status == 2
    assert "chunks of 128 samples but the MC set has chunks of 64" in capsys.readouterr().err


def test_cli_missing_mc_file(tmp_path, capsys):
    bundle = write_tiny_bundle(tmp_path, chunk_length=CHUNK_LENGTH)
    status = _run(["--bundle", bundle, "--mc", str(tmp_path / "none.h5"), "--out",
                   str(tmp_path / "r")])
    assert status == 2
    assert "not found" in capsys.readouterr().err


def test_cli_bad_options(mc_file, tmp_path, capsys):
    bundle = write_tiny_bundle(tmp_path, chunk_length=CHUNK_LENGTH)
    base = ["--bundle", bundle, "--mc", mc_file, "--out", str(tmp_path / "r")]
    assert _run(base + ["--n-calibration", "1"]) == 2
    assert "--n-calibration must be at least 2" in capsys.readouterr().err
    assert _run(base + ["--n-chunks", "3"]) == 2
    assert "--n-chunks must be at least 16" in capsys.readouterr().err


def test_bundle_compatibility_messages():
    card = {"sample_rate_hz": 19.1, "chunk_length": 1060}
    check_bundle_compatible(card, 19.1, 1060, "b.keras")
    with pytest.raises(ValueError, match="trained at 19.1 Hz but the MC set is at 31 Hz"):
        check_bundle_compatible(card, 31.0, 1060, "b.keras")
    with pytest.raises(ValueError, match="chunks of 1060 samples but the MC set has chunks of 64"):
        check_bundle_compatible(card, 19.1, 64, "b.keras")


def test_parse_split_card_text():
    assert parse_split("split_by_run(validation_fraction=0.1, seed=20240611)") == (0.1, 20240611)
    assert parse_split("random") is None
    assert parse_split(None) is None


def test_card_split_used(mc_file, tmp_path):
    from toast_crab.datasets import read_training_set, split_by_run
    from toast_crab.validation.sources import bundle_split, file_sha256

    training_set = read_training_set(mc_file)
    sha = file_sha256(mc_file)
    card = {"name": "b", "training_data": {"sha256": sha, "path": mc_file,
                                           "split": "split_by_run(validation_fraction=0.25, seed=3)"}}
    split = bundle_split(card, training_set, mc_file, sha, 0.1, 0)
    _, held_out = split_by_run(training_set, 0.25, 3)
    np.testing.assert_array_equal(split.held_out_runs, np.unique(held_out.labels["run_id"]))
    assert "card's split_by_run" in split.note

    other = {"name": "c", "training_data": {"sha256": "0" * 64, "path": "/elsewhere.h5"}}
    split = bundle_split(other, training_set, mc_file, sha, 0.1, 0)
    assert split.training_runs is None
    assert split.held_out_runs.size == 12


def test_cli_runs_conditioned_sequence_bundle(mc_file, tmp_path):
    from helpers import write_tiny_seamless_bundle

    bundle = write_tiny_seamless_bundle(tmp_path, conditioned=True)
    out = str(tmp_path / "seq_report")
    status = _run(["--bundle", bundle, "--mc", mc_file, "--out", out, "--n-chunks", "30",
                   "--n-calibration", "2", "--no-c2st"])
    assert status == 0
    document, by_name = _metrics(out)
    # The tiny MC is made at the default phi of 0.35 GV, read from its labels.
    assert any("phi = 0.35 GV" in note for note in document["notes"])
    assert by_name["marginal_ks"]["passed"]["tiny_seq"] is False


def test_cli_conditioned_bundle_outside_range_fails(mc_file, tmp_path, capsys):
    from helpers import write_tiny_seamless_bundle

    bundle = write_tiny_seamless_bundle(tmp_path, conditioned=True)
    status = _run(["--bundle", bundle, "--mc", mc_file, "--out", str(tmp_path / "r"),
                   "--n-chunks", "30", "--n-calibration", "2", "--no-c2st", "--phi-gv", "1.5"])
    assert status == 2
    assert "phi = 1.5 GV lies outside the range [0.3, 0.75]" in capsys.readouterr().err


def test_split_of_multi_file_card(mc_file):
    from toast_crab.datasets import read_training_set
    from toast_crab.validation.sources import bundle_split, file_sha256

    training_set = read_training_set(mc_file)
    sha = file_sha256(mc_file)
    runs = np.unique(training_set.labels["run_id"])
    other = {"files": [{"path": "/elsewhere/a.h5", "sha256": "0" * 64, "n_train": 10}]}
    split = bundle_split({"name": "m", "training_data": other}, training_set, mc_file, sha, 0.1, 0)
    np.testing.assert_array_equal(split.held_out_runs, runs)
    assert split.training_runs is None
    held_level = {"files": [{"path": mc_file, "sha256": sha, "n_held_out": 360}]}
    split = bundle_split({"name": "m", "training_data": held_level}, training_set, mc_file, sha,
                         0.1, 0)
    np.testing.assert_array_equal(split.held_out_runs, runs)
    trained = {"files": [{"path": mc_file, "sha256": sha, "n_train": 300,
                          "validation_runs": [2, 5]}]}
    split = bundle_split({"name": "m", "training_data": trained}, training_set, mc_file, sha,
                         0.1, 0)
    np.testing.assert_array_equal(split.held_out_runs, [2, 5])
    assert 2 not in split.training_runs
    assert split.training_runs.size == runs.size - 2
