"""Tests of the crab-mc command line."""

import subprocess
import sys

import numpy as np
import pytest

from toast_crab.datasets import read_training_set
from toast_crab.mc import MCConfig
from toast_crab.mc.cli import main


def test_cli_writes_readable_set(tmp_path, capsys):
    out = tmp_path / "train.h5"
    plot = tmp_path / "train.png"
    status = main(
        ["--n-chunks", "4", "--n-runs", "2", "--chunk-length", "300", "--seed", "5",
         "--out", str(out), "--plot", str(plot)]
    )
    assert status == 0
    printed = capsys.readouterr().out
    assert str(out) in printed
    assert "4 chunks" in printed

    training_set = read_training_set(str(out))
    assert training_set.chunks.shape == (4, 300)
    assert training_set.sample_rate_hz == pytest.approx(19.1)
    assert list(training_set.labels["run_id"]) == [0, 0, 1, 1]
    provenance = training_set.provenance
    assert provenance["seed"] == 5
    assert MCConfig.from_dict(provenance["mc_config"]) == MCConfig()
    assert provenance["command"].startswith("crab-mc --n-chunks 4")
    assert "toast_crab_version" in provenance
    assert "date_utc" in provenance
    assert plot.stat().st_size > 10_000
    assert np.all(np.isfinite(training_set.chunks))


def test_cli_bad_config_exit_code(tmp_path, capsys):
    config = tmp_path / "bad.toml"
    config.write_text("[environment]\nphi_gv = -0.2\n")
    status = main(["--config", str(config), "--n-chunks", "2", "--out", str(tmp_path / "x.h5")])
    assert status == 2
    assert "phi_gv must be >= 0" in capsys.readouterr().err
    assert not (tmp_path / "x.h5").exists()


def test_cli_missing_config_exit_code(tmp_path, capsys):
    status = main(
        ["--config", str(tmp_path / "none.toml"), "--n-chunks", "2", "--out", str(tmp_path / "x.h5")]
    )
    assert status == 2
    assert "not found" in capsys.readouterr().err


def test_cli_module_entry_point(tmp_path):
    out = tmp_path / "run.h5"
    completed = subprocess.run(
        [sys.executable, "-m", "toast_crab.mc.cli", "--n-chunks", "1", "--chunk-length", "100",
         "--out", str(out)],
        capture_output=True, text=True, check=False, timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    assert read_training_set(str(out)).chunks.shape == (1, 100)


def test_cli_group_of_detectors(tmp_path, capsys):
    out = tmp_path / "group.h5"
    plot = tmp_path / "group.png"
    status = main(
        ["--n-chunks", "4", "--n-runs", "2", "--chunk-length", "200", "--n-detectors", "6",
         "--seed", "3", "--out", str(out), "--plot", str(plot)]
    )
    assert status == 0
    assert "6 detectors x 200 samples" in capsys.readouterr().out
    training_set = read_training_set(str(out))
    assert training_set.chunks.shape == (4, 6, 200)
    assert training_set.n_detectors == 6
    assert training_set.provenance["n_detectors"] == 6
    assert np.array(training_set.provenance["detector_positions_m"]).shape == (6, 2)
    # Detectors of one wafer share its hits, so their chunks are correlated.
    correlation = np.corrcoef(training_set.chunks[0])
    assert correlation[0, 1] > 0.5
    assert plot.stat().st_size > 10_000


def test_cli_too_many_detectors_exit_code(tmp_path, capsys):
    status = main(
        ["--n-chunks", "1", "--n-detectors", "400", "--out", str(tmp_path / "x.h5")]
    )
    assert status == 2
    assert "more than wafer_side_m" in capsys.readouterr().err
