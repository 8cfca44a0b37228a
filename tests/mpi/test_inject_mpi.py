"""InjectCRAB under MPI: the same configuration gives bit-identical timestreams on
every process grid. Run with ``mpiexec -n 2 python -m pytest tests/mpi``; with one
process the layout comparisons are skipped.

Every rank evaluates the same gathered comparison, so an assertion fails on all
ranks together and no rank is left waiting in a collective.
"""

import numpy as np
import pytest
from mpi4py import MPI

from helpers import (
    create_comm,
    create_satellite_data,
    gather_detdata,
    write_tiny_bundle,
    write_tiny_seamless_bundle,
)
from toast_crab.ops import InjectCRAB

WORLD = MPI.COMM_WORLD
needs_two = pytest.mark.skipif(WORLD.size < 2, reason="needs mpiexec -n 2 or more")


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory):
    path = None
    if WORLD.rank == 0:
        path = write_tiny_bundle(tmp_path_factory.mktemp("bundle"), chunk_length=128)
    return WORLD.bcast(path, root=0)


def _inject(comm, bundle_path, groupsize=0, distribute_time=False, realization=0,
            streams="detector", **options):
    toast_comm = create_comm(comm, groupsize=groupsize)
    data = create_satellite_data(toast_comm, distribute_time=distribute_time)
    InjectCRAB(
        model=bundle_path, det_data="cr", realization=realization, streams=streams, **options
    ).apply(data)
    result = gather_detdata(data, "cr", WORLD)
    data.clear()
    return result


@pytest.fixture(scope="module")
def reference(bundle_path):
    # One process contains all the data: the layout every other run must reproduce.
    return _inject(MPI.COMM_SELF, bundle_path) if WORLD.size > 1 else None


def _mismatches(result, reference):
    bad = [name for name in reference if not np.array_equal(result.get(name), reference[name])]
    if set(result) != set(reference):
        bad.append(f"detector sets differ: {sorted(set(result) ^ set(reference))}")
    return bad


@needs_two
def test_detector_distributed_matches_one_process(bundle_path, reference):
    result = _inject(WORLD, bundle_path, groupsize=0)
    assert _mismatches(result, reference) == []


@needs_two
def test_two_groups_match_one_process(bundle_path, reference):
    result = _inject(WORLD, bundle_path, groupsize=1)
    assert _mismatches(result, reference) == []


@needs_two
def test_time_distributed_matches_one_process(bundle_path, reference):
    result = _inject(WORLD, bundle_path, groupsize=0, distribute_time=True)
    assert _mismatches(result, reference) == []


@needs_two
def test_wafer_streams_match_one_process(bundle_path):
    reference = _inject(MPI.COMM_SELF, bundle_path, streams="wafer")
    result = _inject(WORLD, bundle_path, distribute_time=True, streams="wafer")
    assert _mismatches(result, reference) == []


@needs_two
def test_reference_is_not_trivial(reference):
    values = np.concatenate(list(reference.values()))
    assert len(reference) == 2 * 14
    assert np.count_nonzero(values) == values.size


def test_realization_changes_all_layouts(bundle_path):
    first = _inject(WORLD, bundle_path, realization=0)
    second = _inject(WORLD, bundle_path, realization=1)
    same = [name for name in first if np.array_equal(first[name], second[name])]
    assert same == []


def test_rank_without_detectors(bundle_path):
    # The first pixel's two detectors live on one rank (detset_key="pixel"), so with
    # that subset the other rank of the group has no local detectors to inject.
    toast_comm = create_comm(WORLD)
    data = create_satellite_data(toast_comm, n_obs=1)
    subset = list(data.obs[0].all_detectors[:2])
    InjectCRAB(model=bundle_path, det_data="cr").apply(data, detectors=subset)
    n_selected = len(data.obs[0].select_local_detectors(subset))
    result = gather_detdata(data, "cr", WORLD)
    data.clear()
    counts = WORLD.allgather(n_selected)
    if WORLD.size > 1:
        assert 0 in counts
    assert sorted(name[1] for name in result) == sorted(str(d) for d in subset)
    assert all(np.any(values != 0) for values in result.values())


def test_group_without_observations(bundle_path):
    # Two groups and one observation: the second group has nothing to do.
    toast_comm = create_comm(WORLD, groupsize=1)
    data = create_satellite_data(toast_comm, n_obs=1)
    InjectCRAB(model=bundle_path, det_data="cr").apply(data)
    n_obs = WORLD.allgather(len(data.obs))
    result = gather_detdata(data, "cr", WORLD)
    data.clear()
    if WORLD.size > 1:
        assert 0 in n_obs
    assert len(result) == 14


@pytest.fixture(scope="module")
def seamless_path(tmp_path_factory):
    path = None
    if WORLD.rank == 0:
        path = write_tiny_seamless_bundle(tmp_path_factory.mktemp("seq"), conditioned=True)
    return WORLD.bcast(path, root=0)


@needs_two
@pytest.mark.parametrize("groupsize, distribute_time", [(0, False), (1, False), (0, True)])
def test_seamless_blocks_match_one_process(seamless_path, groupsize, distribute_time):
    # phi comes from each observation's date; blocks of 16 latent positions (64
    # samples) split every observation into many blocks with shared halos.
    options = dict(block_latents=16, batch_size=8)
    reference = _inject(MPI.COMM_SELF, seamless_path, **options)
    result = _inject(WORLD, seamless_path, groupsize=groupsize,
                     distribute_time=distribute_time, **options)
    assert _mismatches(result, reference) == []
    assert all(np.any(values != 0) for values in reference.values())
