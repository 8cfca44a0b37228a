"""Device assignment under mpiexec: each rank finds its node-local rank and GPU index."""

from mpi4py import MPI

from helpers import create_comm
from toast_crab.devices import gpu_for_rank, node_rank_and_size

WORLD = MPI.COMM_WORLD


def test_node_rank_from_mpi_communicator():
    # mpiexec on one machine puts every rank on the same node.
    node_rank, node_size = node_rank_and_size(WORLD)
    assert node_size == WORLD.size
    assert sorted(WORLD.allgather(node_rank)) == list(range(WORLD.size))


def test_node_rank_from_toast_comm():
    node_rank, node_size = node_rank_and_size(create_comm(WORLD))
    assert (node_rank, node_size) == node_rank_and_size(WORLD)


def test_ranks_get_distinct_gpus_when_enough():
    node_rank, node_size = node_rank_and_size(WORLD)
    gpus = WORLD.allgather(gpu_for_rank(node_rank, n_gpus=node_size))
    assert sorted(gpus) == list(range(node_size))
    shared = WORLD.allgather(gpu_for_rank(node_rank, n_gpus=1))
    assert set(shared) == {0}
