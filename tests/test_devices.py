"""Device choice for the generator: GPU per node-local rank, missing GPUs, mixed
precision and the unchanged CPU path. Only the tests marked needs_gpu need a GPU."""

import numpy as np
import pytest
import traitlets
from mpi4py import MPI

from helpers import create_comm, create_satellite_data, write_tiny_bundle
from toast_crab.bundle import load_bundle
from toast_crab.devices import (
    FLOAT32_RTOL,
    MIXED_FLOAT16_RTOL,
    GPUNotFoundError,
    compare_devices,
    configure_devices,
    gpu_for_rank,
    mixed_precision_model,
    node_rank_and_size,
    select_device,
)
from toast_crab.ops import InjectCRAB


def _has_gpu():
    import tensorflow as tf

    return len(tf.config.list_physical_devices("GPU")) > 0


needs_no_gpu = pytest.mark.skipif(_has_gpu(), reason="checks the behaviour without a GPU")
needs_gpu = pytest.mark.skipif(not _has_gpu(), reason="needs a GPU visible to TensorFlow")


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory):
    return write_tiny_bundle(tmp_path_factory.mktemp("bundle"))


@pytest.fixture
def data():
    data = create_satellite_data(create_comm(None), n_obs=1)
    yield data
    data.clear()


# ---------------------------------------------------------------- with a GPU
# These come first: the first device policy of a process fixes which GPUs
# TensorFlow can use, and a "cpu" policy hides them all.


@needs_gpu
@pytest.mark.parametrize("mixed", [False, True])
def test_gpu_matches_cpu_within_tolerance(bundle_path, mixed):
    result = compare_devices(load_bundle(bundle_path), device="/GPU:0", mixed_precision=mixed)
    assert result.passed, (
        f"GPU differs from CPU by {result.relative_diff:.2e} of max |output|, "
        f"tolerance {result.rtol:.0e}"
    )


@needs_gpu
def test_inject_gpu_close_to_cpu(bundle_path, data):
    # GPU first: a first "cpu" policy would hide the GPUs from this process.
    InjectCRAB(model=bundle_path, det_data="gpu", device="gpu").apply(data)
    InjectCRAB(model=bundle_path, det_data="gpu_again", device="gpu").apply(data)
    InjectCRAB(model=bundle_path, det_data="cpu", device="cpu").apply(data)
    ob = data.obs[0]
    for det in ob.local_detectors:
        cpu = ob.detdata["cpu"][det]
        gpu = ob.detdata["gpu"][det]
        # An error dy in network space becomes scale_w * cosh(y) * dy in W, up to
        # max |y| times the network tolerance relative to max |W|; 10x covers |y| <= 10.
        np.testing.assert_allclose(gpu, cpu, rtol=0, atol=10 * FLOAT32_RTOL * np.abs(cpu).max())
        np.testing.assert_array_equal(ob.detdata["gpu_again"][det], gpu)


# ---------------------------------------------------------------- without a GPU


@pytest.mark.parametrize(
    "node_rank, n_gpus, expected",
    [(0, 1, 0), (3, 1, 0), (0, 4, 0), (3, 4, 3), (5, 4, 1), (7, 8, 7), (9, 8, 1)],
)
def test_gpu_for_rank_cycles(node_rank, n_gpus, expected):
    assert gpu_for_rank(node_rank, n_gpus) == expected


def test_gpu_for_rank_spreads_evenly():
    # 8 processes on a node with 4 GPUs: two processes per GPU.
    counts = np.bincount([gpu_for_rank(rank, 4) for rank in range(8)], minlength=4)
    assert counts.tolist() == [2, 2, 2, 2]


def test_gpu_for_rank_bad_input_rejected():
    with pytest.raises(ValueError, match="n_gpus must be >= 1 to pick a GPU. Got 0"):
        gpu_for_rank(0, 0)
    with pytest.raises(ValueError, match="node_rank must be >= 0. Got -1"):
        gpu_for_rank(-1, 2)
    with pytest.raises(TypeError, match="n_gpus must be an integer. Got 2.0"):
        gpu_for_rank(0, 2.0)
    with pytest.raises(TypeError, match="node_rank must be an integer. Got True"):
        gpu_for_rank(True, 2)


def test_select_device_policies():
    assert select_device("auto", 0, 3).kind == "cpu"
    auto = select_device("auto", 2, 3)
    assert (auto.kind, auto.gpu_index) == ("gpu", 1)
    assert select_device("cpu", 4, 0).kind == "cpu"
    gpu = select_device("gpu", 4, 6)
    assert (gpu.kind, gpu.gpu_index, gpu.fell_back) == ("gpu", 2, False)
    fallback = select_device("gpu", 0, 0, on_missing_gpu="fallback")
    assert (fallback.kind, fallback.gpu_index, fallback.fell_back) == ("cpu", None, True)


def test_select_device_missing_gpu_raises():
    with pytest.raises(GPUNotFoundError, match=r"device='gpu'.*finds no GPU.*on_missing_gpu='fallback'"):
        select_device("gpu", 0, 0, on_missing_gpu="error")


def test_select_device_bad_choice_rejected():
    with pytest.raises(ValueError, match=r"device policy must be one of \['auto', 'cpu', 'gpu'\]. Got 'tpu'"):
        select_device("tpu", 0, 0)
    with pytest.raises(ValueError, match=r"on_missing_gpu must be one of \['error', 'fallback'\]. Got 'ignore'"):
        select_device("gpu", 0, 0, on_missing_gpu="ignore")
    with pytest.raises(TypeError, match="device policy must be a string"):
        select_device(None, 0, 0)


def test_node_rank_single_process():
    assert node_rank_and_size(None) == (0, 1)
    assert node_rank_and_size(MPI.COMM_SELF) == (0, 1)


def test_node_rank_from_toast_comm():
    comm = create_comm(MPI.COMM_WORLD)
    rank, size = node_rank_and_size(comm)
    assert 0 <= rank < size
    assert (rank, size) == node_rank_and_size(MPI.COMM_WORLD)


@needs_no_gpu
def test_configure_missing_gpu_raises():
    with pytest.raises(GPUNotFoundError, match="finds no GPU in this process"):
        configure_devices("gpu", "error")


@needs_no_gpu
def test_configure_missing_gpu_falls_back(capfd):
    plan = configure_devices("gpu", "fallback")
    assert (plan.kind, plan.device, plan.fell_back) == ("cpu", "/CPU:0", True)
    assert "no GPU visible; falling back to the CPU" in capfd.readouterr().out


@needs_no_gpu
def test_configure_auto_uses_cpu():
    plan = configure_devices("auto")
    assert (plan.kind, plan.device, plan.gpu_index, plan.n_gpus) == ("cpu", "/CPU:0", None, 0)
    assert configure_devices("cpu").device == "/CPU:0"


@needs_no_gpu
def test_inject_missing_gpu_leaves_data(bundle_path, data):
    ob = data.obs[0]
    ob.detdata["signal"].data[:] = 1.5
    with pytest.raises(GPUNotFoundError, match="device='gpu'"):
        InjectCRAB(model=bundle_path, device="gpu").apply(data)
    assert np.all(ob.detdata["signal"].data == 1.5)


@needs_no_gpu
def test_inject_auto_is_cpu_path(bundle_path, data):
    InjectCRAB(model=bundle_path, det_data="auto").apply(data)
    InjectCRAB(model=bundle_path, det_data="cpu", device="cpu").apply(data)
    ob = data.obs[0]
    for det in ob.local_detectors:
        assert np.any(ob.detdata["auto"][det] != 0)
        np.testing.assert_array_equal(ob.detdata["cpu"][det], ob.detdata["auto"][det])


def test_inject_cpu_ignores_mixed_precision(bundle_path, data, capfd):
    InjectCRAB(model=bundle_path, det_data="cpu", device="cpu").apply(data)
    InjectCRAB(model=bundle_path, det_data="mixed", device="cpu", mixed_precision=True).apply(data)
    assert "mixed_precision applies to GPU inference only" in capfd.readouterr().out
    ob = data.obs[0]
    for det in ob.local_detectors:
        np.testing.assert_array_equal(ob.detdata["mixed"][det], ob.detdata["cpu"][det])


@needs_no_gpu
def test_inject_gpu_fallback_matches_cpu(bundle_path, data, capfd):
    InjectCRAB(model=bundle_path, det_data="cpu", device="cpu").apply(data)
    InjectCRAB(
        model=bundle_path, det_data="fallback", device="gpu", on_missing_gpu="fallback"
    ).apply(data)
    assert "falling back to the CPU" in capfd.readouterr().out
    ob = data.obs[0]
    for det in ob.local_detectors:
        np.testing.assert_array_equal(ob.detdata["fallback"][det], ob.detdata["cpu"][det])


@pytest.mark.parametrize(
    "trait, value, message",
    [
        ("device", "tpu", r"device must be one of \['auto', 'cpu', 'gpu'\]. Got 'tpu'"),
        ("on_missing_gpu", "ignore", r"on_missing_gpu must be one of \['error', 'fallback'\]"),
    ],
)
def test_inject_bad_device_traits_rejected(trait, value, message):
    with pytest.raises(traitlets.TraitError, match=message):
        InjectCRAB(**{trait: value})


def test_mixed_precision_model_policies(bundle_path):
    generator = load_bundle(bundle_path).generator
    mixed = mixed_precision_model(generator)
    policies = [layer.dtype_policy.name for layer in mixed.layers[1:]]
    last_weighted = max(i for i, layer in enumerate(mixed.layers[1:]) if layer.weights)
    assert set(policies[:last_weighted]) == {"mixed_float16"}
    assert set(policies[last_weighted:]) == {"float32"}
    assert mixed.outputs[0].dtype == "float32"
    for original, copy in zip(generator.get_weights(), mixed.get_weights()):
        np.testing.assert_array_equal(original, copy)


def test_compare_devices_float32_identical(bundle_path):
    result = compare_devices(load_bundle(bundle_path), device="/CPU:0", n_chunks=64, batch_size=32)
    assert result.rtol == FLOAT32_RTOL
    assert result.reference_max_abs > 0
    assert result.max_abs_diff == 0.0
    assert result.passed


def test_compare_devices_mixed_within_tolerance(bundle_path):
    # float16 on the CPU: the same arithmetic a GPU runs under mixed precision.
    result = compare_devices(
        load_bundle(bundle_path), device="/CPU:0", mixed_precision=True, n_chunks=64, batch_size=32
    )
    assert result.rtol == MIXED_FLOAT16_RTOL
    assert result.max_abs_diff > 0
    assert result.relative_diff < MIXED_FLOAT16_RTOL
    assert result.passed
    strict = compare_devices(
        load_bundle(bundle_path), device="/CPU:0", mixed_precision=True, n_chunks=64,
        batch_size=32, rtol=FLOAT32_RTOL,
    )
    assert not strict.passed

