"""End-to-end runs of the LiteBIRD workflow and the toast_run example under mpiexec."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from astropy import units as u

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKFLOW = os.path.join(REPO, "workflows", "toast_crab_sim_satellite.py")
TOAST_RUN_CONFIG = os.path.join(REPO, "examples", "toast_run_crab.yml")

# Tiny run: one T/B pair, two 10 min observations (11460 samples each at 19.1 Hz),
# nside 16. Two observations let each of the two processes hold one.
N_DETECTORS = 2
N_OBS = 2
SAMPLES_PER_OBS = 11460
NSIDE = 16

pytestmark = pytest.mark.slow


def executable(name):
    """Return a command of the environment that runs the tests (mpiexec, toast_run)."""
    beside_python = os.path.join(os.path.dirname(sys.executable), name)
    found = beside_python if os.path.exists(beside_python) else shutil.which(name)
    if found is None:
        raise FileNotFoundError(
            f"{name} not found beside the Python interpreter or on PATH. Install "
            "toast and an MPI library (e.g. pip install mpich) in this environment."
        )
    return found


def run(command, timeout_s=300):
    """Run a command with TOAST's thread setting and return the completed process."""
    env = dict(os.environ, OMP_NUM_THREADS="1", TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout_s
    )
    return result


def check_success(result):
    assert result.returncode == 0, (
        f"exit code {result.returncode}\nstdout:\n{result.stdout[-4000:]}\n"
        f"stderr:\n{result.stderr[-4000:]}"
    )


def read_maps(folder, name):
    import healpy as hp

    iqu = hp.read_map(os.path.join(folder, f"{name}_map.fits"), field=None, nest=True)
    hits = hp.read_map(os.path.join(folder, f"{name}_hits.fits"), nest=True)
    return np.asarray(iqu), np.asarray(hits)


@pytest.fixture(scope="module")
def workflow_dir(tmp_path_factory):
    out_dir = str(tmp_path_factory.mktemp("litebird_crab"))
    result = run([
        executable("mpiexec"), "-n", "2", sys.executable, WORKFLOW,
        "--config", os.path.join(REPO, "workflows", "litebird_small.toml"),
        "--out_dir", out_dir,
        "--n_detectors", str(N_DETECTORS),
        "--num_obs", str(N_OBS),
        "--obs_hours", str(10.0 / 60.0),
        "--pixels.nside", str(NSIDE),
        "--plot_minutes", "2",
    ])
    check_success(result)
    return out_dir


@pytest.mark.parametrize("name", ["mapmaker_cr", "mapmaker_total"])
def test_workflow_maps_readable(workflow_dir, name):
    iqu, hits = read_maps(workflow_dir, name)
    assert iqu.shape == (3, 12 * NSIDE**2)
    seen = hits > 0
    assert np.count_nonzero(seen) > 0
    assert np.all(np.isfinite(iqu))
    assert np.count_nonzero(iqu[0][seen]) > 0


def test_workflow_cr_map_differs_from_total(workflow_dir):
    cr_iqu, _ = read_maps(workflow_dir, "mapmaker_cr")
    total_iqu, _ = read_maps(workflow_dir, "mapmaker_total")
    assert not np.allclose(cr_iqu, total_iqu)


@pytest.mark.parametrize(
    "name", ["cr_timestream.png", "cr_histogram.png", "maps_cr.png", "maps_total.png"]
)
def test_workflow_plot_written(workflow_dir, name):
    import matplotlib.image

    image = matplotlib.image.imread(os.path.join(workflow_dir, name))
    assert image.ndim == 3
    assert image.shape[0] > 300
    assert image.shape[1] > 500
    # A blank canvas has one colour, but a plot has many.
    assert len(np.unique(image.reshape(-1, image.shape[2]), axis=0)) > 50


def test_workflow_summary_contents(workflow_dir):
    from toast_crab.bundle import default_bundle_path, read_card

    with open(os.path.join(workflow_dir, "summary.json")) as handle:
        summary = json.load(handle)
    expected_keys = {
        "detectors", "samples", "cr_rms_kcmb", "cr_map_rms_kcmb", "run_time_s",
        "versions", "git_commit", "model_name", "channel", "sample_rate_hz",
        "observations", "nside", "hwp_rpm", "outputs",
    }
    assert expected_keys <= set(summary)
    assert len(summary["detectors"]) == N_DETECTORS
    assert len(summary["observations"]) == N_OBS
    assert summary["samples"] == N_DETECTORS * N_OBS * SAMPLES_PER_OBS
    assert summary["cr_rms_kcmb"] > 0
    assert summary["run_time_s"] > 0
    assert summary["nside"] == NSIDE
    assert summary["hwp_rpm"] == 46.0
    assert summary["sample_rate_hz"] == 19.1
    assert summary["model_name"] == read_card(default_bundle_path())["name"]
    assert summary["versions"]["toast"] == "3.0.6"


def test_workflow_summary_map_rms(workflow_dir):
    with open(os.path.join(workflow_dir, "summary.json")) as handle:
        summary = json.load(handle)
    iqu, hits = read_maps(workflow_dir, "mapmaker_cr")
    seen = hits > 0
    for index, stokes in enumerate("IQU"):
        recomputed = np.sqrt(np.mean(iqu[index][seen].astype(np.float64) ** 2))
        assert np.isclose(summary["cr_map_rms_kcmb"][stokes], recomputed, rtol=1e-5)


def test_workflow_config_reloads(workflow_dir):
    import toast.config

    config = toast.config.load_config(os.path.join(workflow_dir, "config_resolved.toml"))
    operators = config["operators"]
    assert operators["inject_crab"]["det_data"]["value"] == "cr_signal"
    assert float(operators["sim_satellite"]["hwp_rpm"]["value"]) == 46.0
    assert int(operators["pixels"]["nside"]["value"]) == NSIDE


def test_workflow_unknown_channel(tmp_path):
    result = run([
        sys.executable, WORKFLOW, "--out_dir", str(tmp_path), "--channel", "L9-999",
    ])
    assert result.returncode != 0
    assert "Unknown LiteBIRD channel 'L9-999'" in result.stdout + result.stderr


def test_toast_run_example(tmp_path):
    from toast_crab.instrument import write_toast_inputs

    telescope_file, schedule_file = write_toast_inputs(
        str(tmp_path / "inputs"), n_detectors=4, num_observations=1,
        observation_time=10 * u.minute,
    )
    out_dir = str(tmp_path / "out")
    result = run([
        executable("mpiexec"), "-n", "2", executable("toast_run"), "--config", TOAST_RUN_CONFIG,
        "--out_dir", out_dir,
        "--sim_satellite.telescope_file", telescope_file,
        "--sim_satellite.schedule_file", schedule_file,
        "--mapmaker_cr.output_dir", out_dir,
        "--mapmaker_total.output_dir", out_dir,
        "--pixels.nside", str(NSIDE),
    ])
    check_success(result)
    for name in ("mapmaker_cr", "mapmaker_total"):
        iqu, hits = read_maps(out_dir, name)
        assert np.count_nonzero(hits > 0) > 0
        assert np.all(np.isfinite(iqu))
    assert "InjectCRAB added cosmic rays" in result.stdout + result.stderr


def test_workflow_with_monte_carlo_source(tmp_path):
    out_dir = str(tmp_path / "mc")
    result = run([
        executable("mpiexec"), "-n", "2", sys.executable, WORKFLOW,
        "--config", os.path.join(REPO, "workflows", "litebird_small.toml"),
        "--out_dir", out_dir,
        "--n_detectors", "2",
        "--num_obs", "2",
        "--obs_hours", str(5.0 / 60.0),
        "--pixels.nside", str(NSIDE),
        "--plot_minutes", "1",
        "--inject_crab.disable",
        "--sim_cr_mc.enable",
    ])
    check_success(result)
    with open(os.path.join(out_dir, "summary.json")) as handle:
        summary = json.load(handle)
    assert summary["cr_source"] == "sim_cr_mc"
    assert summary["model_path"] is None
    assert summary["cr_rms_kcmb"] > 0
    iqu, hits = read_maps(out_dir, "mapmaker_cr")
    assert np.count_nonzero(hits > 0) > 0
    assert np.all(np.isfinite(iqu))


def test_workflow_rejects_two_sources(tmp_path):
    result = run([
        sys.executable, WORKFLOW, "--out_dir", str(tmp_path), "--sim_cr_mc.enable",
        "--n_detectors", "2", "--num_obs", "1", "--obs_hours", "0.05",
    ])
    assert result.returncode != 0
    assert "Exactly one cosmic-ray source must be enabled, but 2 are" in result.stdout + result.stderr


def test_workflow_missing_model_fails_early(tmp_path):
    result = run([
        executable("mpiexec"), "-n", "2", sys.executable, WORKFLOW,
        "--out_dir", str(tmp_path), "--n_detectors", "2", "--num_obs", "2",
        "--obs_hours", "0.05", "--inject_crab.model", str(tmp_path / "nope.keras"),
    ])
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "nope.keras' not found" in output
    assert "Traceback" not in output
    # The bundle is checked before SimSatellite runs.
    assert "Simulated pointing" not in output


def test_workflow_with_conditioned_seamless_model(tmp_path):
    from helpers import write_tiny_seamless_bundle

    bundle = write_tiny_seamless_bundle(tmp_path, conditioned=True)
    out_dir = str(tmp_path / "seamless")
    result = run([
        executable("mpiexec"), "-n", "2", sys.executable, WORKFLOW,
        "--config", os.path.join(REPO, "workflows", "litebird_small.toml"),
        "--out_dir", out_dir, "--n_detectors", "2", "--num_obs", "2",
        "--obs_hours", str(5.0 / 60.0), "--pixels.nside", str(NSIDE), "--plot_minutes", "1",
        "--inject_crab.model", bundle, "--inject_crab.block_latents", "32",
    ])
    check_success(result)
    with open(os.path.join(out_dir, "summary.json")) as handle:
        summary = json.load(handle)
    assert summary["model_family"] == "seamless"
    phis = summary["phi_gv_per_observation"]
    assert len(phis) == N_OBS
    # phi(t) of the default solar cycle stays within [0.30, 0.75] GV.
    assert all(0.3 - 1e-9 <= value <= 0.75 + 1e-9 for value in phis.values())
    assert summary["cr_rms_kcmb"] > 0


def test_workflow_phi_for_unconditioned_model_fails_early(tmp_path):
    crab_default = os.path.join(REPO, "toast_crab", "data", "models", "crab_default.keras")
    result = run([
        sys.executable, WORKFLOW, "--out_dir", str(tmp_path), "--n_detectors", "2",
        "--num_obs", "1", "--obs_hours", "0.05", "--inject_crab.phi", "Quantity('0.4 GV')",
        "--inject_crab.model", crab_default,
    ])
    output = result.stdout + result.stderr
    assert result.returncode == 2
    assert "--inject_crab.phi is 0.4 GV, but model" in output
    assert "Simulated pointing" not in output


def test_workflow_phi_outside_model_range_fails_early(tmp_path):
    result = run([
        sys.executable, WORKFLOW, "--out_dir", str(tmp_path), "--n_detectors", "2",
        "--num_obs", "1", "--obs_hours", "0.05", "--inject_crab.phi", "Quantity('2 GV')",
    ])
    output = result.stdout + result.stderr
    assert result.returncode == 2
    assert "phi = 2 GV lies outside the range [0.3, 0.75] GV" in output
    assert "Simulated pointing" not in output
