"""SimCosmicRayMC under MPI: the same configuration gives bit-identical timestreams on
every process grid. Run with
``mpiexec -n 2 python -m pytest tests/mpi/test_sim_cosmic_ray_mc_mpi.py``; with one
process the layout comparisons are skipped.

Every rank evaluates the same gathered comparison, so an assertion fails on all ranks
together and no rank is left waiting in a collective.
"""

import numpy as np
import pytest
from astropy import units as u
from astropy.table import Column
from mpi4py import MPI

from helpers import create_comm, create_satellite_data, gather_detdata
from toast_crab.ops import SimCosmicRayMC

WORLD = MPI.COMM_WORLD
needs_two = pytest.mark.skipif(WORLD.size < 2, reason="needs mpiexec -n 2 or more")

# Two observations of 2 min at 19.1 Hz (2292 samples): blocks of 500 samples put block
# edges and their lead-ins on both sides of the 1146-sample split of time-distributed data.
OBS_MINUTES = 2.0
BLOCK_LENGTH = 500


def _split_wafers(data):
    # Two wafers so that wafer streams are keyed on more than the telescope.
    for ob in data.obs:
        table = ob.telescope.focalplane.detector_data
        if "wafer" not in table.colnames:
            n_det = len(table)
            table.add_column(Column(name="wafer", data=["W0" if i < 6 else "W1" for i in range(n_det)]))


def _simulate(comm, groupsize=0, distribute_time=False, realization=0, session_start=True):
    toast_comm = create_comm(comm, groupsize=groupsize)
    data = create_satellite_data(
        toast_comm, obs_minutes=OBS_MINUTES, distribute_time=distribute_time
    )
    _split_wafers(data)
    if not session_start:
        for ob in data.obs:
            ob.session.start = None
    SimCosmicRayMC(
        det_data="cr", det_data_units=u.W, realization=realization, block_length=BLOCK_LENGTH
    ).apply(data)
    result = gather_detdata(data, "cr", WORLD)
    data.clear()
    return result


@pytest.fixture(scope="module")
def reference():
    # One process has all detectors and samples: the layout every other run must reproduce.
    return _simulate(MPI.COMM_SELF) if WORLD.size > 1 else None


def _mismatches(result, reference):
    bad = [name for name in reference if not np.array_equal(result.get(name), reference[name])]
    if set(result) != set(reference):
        bad.append(f"detector sets differ: {sorted(set(result) ^ set(reference))}")
    return bad


@needs_two
def test_detector_distributed_matches_one_process(reference):
    assert _mismatches(_simulate(WORLD, groupsize=0), reference) == []


@needs_two
def test_two_groups_match_one_process(reference):
    assert _mismatches(_simulate(WORLD, groupsize=1), reference) == []


@needs_two
def test_time_distributed_matches_one_process(reference):
    assert _mismatches(_simulate(WORLD, groupsize=0, distribute_time=True), reference) == []


@needs_two
def test_time_distributed_without_session_start(reference):
    # Without a session start the block grid starts at each observation's first sample
    # and phi comes from the first sample time, found by a reduction over the group.
    single_process = _simulate(MPI.COMM_SELF, session_start=False)
    split = _simulate(WORLD, distribute_time=True, session_start=False)
    assert _mismatches(split, single_process) == []


@needs_two
def test_reference_is_not_trivial(reference):
    values = np.concatenate(list(reference.values()))
    assert len(reference) == 2 * 14
    assert np.count_nonzero(values) == values.size


def test_realization_changes_all_layouts():
    first = _simulate(WORLD, realization=0)
    second = _simulate(WORLD, realization=1)
    same = [name for name in first if np.array_equal(first[name], second[name])]
    assert same == []


def test_group_without_observations():
    # Two groups and one observation: the second group has nothing to do.
    toast_comm = create_comm(WORLD, groupsize=1)
    data = create_satellite_data(toast_comm, n_obs=1, obs_minutes=1.0)
    SimCosmicRayMC(det_data="cr").apply(data)
    n_obs = WORLD.allgather(len(data.obs))
    result = gather_detdata(data, "cr", WORLD)
    data.clear()
    if WORLD.size > 1:
        assert 0 in n_obs
    assert len(result) == 14
    assert all(np.any(values != 0) for values in result.values())
