"""crab-validate on detector groups: the detector correlation-matrix metrics."""

import json
import os

import numpy as np
import pytest

from helpers import write_tiny_bundle
from toast_crab.datasets import write_training_set
from toast_crab.mc import MCConfig, simulate_training_chunks
from toast_crab.validation.cli import main
from toast_crab.validation.panel import DetectorGroups, evaluate_groups

CHUNK_LENGTH = 64
N_DETECTORS = 4


@pytest.fixture(scope="module")
def group_file(tmp_path_factory):
    """6 MC runs of 20 groups of 4 detectors (one pixel of one wafer), 64 samples."""
    result = simulate_training_chunks(
        MCConfig(), n_chunks=120, chunk_length=CHUNK_LENGTH, seed=31, n_runs=6,
        n_detectors=N_DETECTORS,
    )
    path = os.path.join(str(tmp_path_factory.mktemp("groups")), "mc_groups.h5")
    write_training_set(path, result.chunks, result.labels, result.sample_rate_hz,
                       dict(result.provenance, command="test fixture"))
    return path, result


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    return write_tiny_bundle(tmp_path_factory.mktemp("bundle"), chunk_length=CHUNK_LENGTH)


@pytest.fixture
def no_panel_plots(monkeypatch):
    """Skip the four timestream-panel PNGs, which take most of a CLI run's time.

    test_validation_cli.py checks those plots; these tests read metrics.json,
    report.md and correlation.png only.
    """
    import toast_crab.validation.report as report

    def file_names(result, reference_label, calibration_labels, candidate_labels, out_dir):
        return {key: f"{key}.png" for key in ("timestreams", "distributions", "spectra", "scores")}

    monkeypatch.setattr(report, "plot_panel", file_names)


def _common_mode_groups(label, seed, common_weight, n_chunks=200):
    """Gaussian groups whose detectors share a common part: correlation w^2 / (w^2 + 1)."""
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    common = rng.standard_normal((n_chunks, 1, 128))
    own = rng.standard_normal((n_chunks, N_DETECTORS, 128))
    return DetectorGroups(label, common_weight * common + own)


def _write_groups(path, chunks, n_runs, sample_rate_hz=19.1):
    n_chunks = chunks.shape[0]
    labels = {
        "run_id": np.repeat(np.arange(n_runs), n_chunks // n_runs),
        "chunk_index": np.tile(np.arange(n_chunks // n_runs), n_runs),
    }
    write_training_set(str(path), chunks, labels, sample_rate_hz, {"command": "test"})
    return str(path)


def _run(arguments):
    return main(arguments + ["--quiet", "--no-c2st", "--n-calibration", "2"])


def test_groups_mc_copy_passes():
    reference = _common_mode_groups("reference", 1, 1.0)
    calibration = [_common_mode_groups(f"MC {i}", 2 + i, 1.0) for i in range(3)]
    copy = DetectorGroups("copy", reference.chunks.copy())
    result = evaluate_groups(reference, calibration, {"detector": {"copy": copy}})
    (row,) = [m for m in result.metrics if m.name == "correlation_matrix_detector"]
    assert row.values["copy"] == 0.0
    assert row.passed["copy"] is True
    # Six pairs of four MC sets give six MC-vs-MC values.
    assert len(row.mc_values) == 6


def test_groups_independent_and_shared_fail():
    # Equal common and own variances: MC correlation 0.5 off the diagonal. The
    # standard error of one entry is about 1 / sqrt(200 * 128) = 0.006, so both
    # independent (0) and shared (1) streams lie about 80 standard errors away.
    reference = _common_mode_groups("reference", 1, 1.0)
    calibration = [_common_mode_groups(f"MC {i}", 2 + i, 1.0) for i in range(3)]
    independent = _common_mode_groups("independent", 9, 0.0)
    shared = DetectorGroups("shared", np.repeat(independent.chunks[:, :1], N_DETECTORS, axis=1))
    result = evaluate_groups(
        reference, calibration,
        {"detector": {"bundle": independent}, "wafer": {"bundle": shared}},
    )
    rows = {m.name: m for m in result.metrics}
    assert rows["correlation_matrix_detector"].values["bundle"] == pytest.approx(0.5, abs=0.05)
    assert rows["correlation_matrix_detector"].passed["bundle"] is False
    assert rows["correlation_matrix_wafer"].values["bundle"] == pytest.approx(0.5, abs=0.05)
    assert rows["correlation_matrix_wafer"].passed["bundle"] is False
    assert rows["correlation_matrix_w_wafer"].passed["bundle"] is None
    assert rows["correlation_matrix_detector"].threshold < 0.1


def test_groups_bad_sets_rejected():
    reference = _common_mode_groups("reference", 1, 1.0)
    calibration = [_common_mode_groups(f"MC {i}", 2 + i, 1.0) for i in range(2)]
    with pytest.raises(ValueError, match=r"at least 2 detectors. Got shape \(10, 64\)"):
        DetectorGroups("flat", np.zeros((10, 64)))
    with pytest.raises(ValueError, match="Invalid stream modes \\['pixel'\\]"):
        evaluate_groups(reference, calibration, {"pixel": {}})
    with pytest.raises(ValueError, match="at least 2 calibration MC group sets. Got 1"):
        evaluate_groups(reference, calibration[:1], {})
    small = DetectorGroups("small", np.zeros((5, 2, 128)))
    with pytest.raises(ValueError, match="Compare groups of one size"):
        evaluate_groups(reference, calibration, {"detector": {"b": small}})


def test_cli_group_streams(group_file, tiny_bundle, tmp_path, no_panel_plots):
    path, simulated = group_file
    out = str(tmp_path / "report")
    status = _run(["--bundle", tiny_bundle, "--mc", path, "--group-mc", path, "--out", out])
    assert status == 0
    assert os.path.isfile(os.path.join(out, "correlation.png"))
    with open(os.path.join(out, "metrics.json")) as handle:
        document = json.load(handle)
    rows = {m["name"]: m for m in document["panel"]["metrics"]}
    groups = document["groups"]
    # 6 runs in 3 blocks of 2 runs of 20 groups each.
    assert groups["chunks_per_set"] == 40
    assert groups["runs"]["held-out group MC"] == [0, 1]

    # The 4 detectors share one pixel, so wafer hits make them strongly correlated.
    mc = np.array(groups["matrices"]["held-out group MC"]["scaled"])
    off = ~np.eye(N_DETECTORS, dtype=bool)
    assert np.all(mc[off] > 0.8)
    detector = rows["correlation_matrix_detector"]
    assert detector["values"]["tiny"] > 0.5
    assert detector["passed"]["tiny"] is False

    # One shared stream per group: every detector has the same samples.
    sets = groups["candidate_sets"]["wafer"]
    for quantity in ("scaled", "w"):
        wafer = np.array(groups["matrices"][sets["tiny"]][quantity])
        np.testing.assert_allclose(wafer[off], 1.0, atol=1e-12)
    with open(os.path.join(out, "report.md")) as handle:
        report = handle.read()
    assert "## Detector groups" in report
    assert "| `correlation_matrix_wafer` |" in report


def test_cli_without_group_option(group_file, tiny_bundle, tmp_path, no_panel_plots):
    path, _ = group_file
    out = str(tmp_path / "report")
    assert _run(["--bundle", tiny_bundle, "--mc", path, "--out", out]) == 0
    with open(os.path.join(out, "metrics.json")) as handle:
        document = json.load(handle)
    assert document["groups"] is None
    assert not [m for m in document["panel"]["metrics"] if m["group"] == "groups"]
    assert not os.path.exists(os.path.join(out, "correlation.png"))


def test_cli_group_single_detector_file(group_file, tiny_bundle, tmp_path, capsys):
    path, simulated = group_file
    single = _write_groups(tmp_path / "single.h5", simulated.chunks[:, 0, :], 6)
    status = _run(["--bundle", tiny_bundle, "--mc", path, "--group-mc", single,
                   "--out", str(tmp_path / "r")])
    assert status == 2
    assert "contains single-detector chunks of shape (120, 64) (format version 1)" in (
        capsys.readouterr().err
    )


def test_cli_group_other_sample_rate(group_file, tiny_bundle, tmp_path, capsys):
    path, simulated = group_file
    other = _write_groups(tmp_path / "rate.h5", simulated.chunks, 6, sample_rate_hz=31.0)
    status = _run(["--bundle", tiny_bundle, "--mc", path, "--group-mc", other,
                   "--out", str(tmp_path / "r")])
    assert status == 2
    assert "is sampled at 31 Hz but --mc" in capsys.readouterr().err


def test_cli_group_too_few_runs(group_file, tiny_bundle, tmp_path, capsys):
    path, simulated = group_file
    few = _write_groups(tmp_path / "few.h5", simulated.chunks, 2)
    status = _run(["--bundle", tiny_bundle, "--mc", path, "--group-mc", few,
                   "--out", str(tmp_path / "r")])
    assert status == 2
    err = capsys.readouterr().err
    assert "has 2 MC runs, but the correlation check needs at least 3" in err
    assert "lower --n-calibration" in err


def test_cli_group_without_chunk_index(group_file, tiny_bundle, tmp_path, capsys):
    path, simulated = group_file
    no_index = str(tmp_path / "no_index.h5")
    write_training_set(no_index, simulated.chunks, {"run_id": simulated.labels["run_id"]},
                       simulated.sample_rate_hz, {"command": "test"})
    status = _run(["--bundle", tiny_bundle, "--mc", path, "--group-mc", no_index,
                   "--out", str(tmp_path / "r")])
    assert status == 2
    assert "has no chunk_index label (labels: ['run_id'])" in capsys.readouterr().err
