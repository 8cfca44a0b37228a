"""Choose where TensorFlow runs the generator: the CPU or one GPU per MPI process.

On a node with several GPUs, each MPI process takes the GPU of its node-local
rank, ``gpu = node_rank % n_gpus``, the rule TOAST's own accelerator code uses
(``toast.accelerator.accel_assign_device``). The node-local rank comes from the
communicator of the processes that share memory (``MPI.COMM_TYPE_SHARED``), which
``toast.Comm`` builds once as ``comm_world_node``. Under Slurm with
``--gpus-per-task=1`` every process finds a single GPU, and the rule picks it.

TensorFlow fixes its devices when its runtime starts, so :func:`configure_devices`
must run before the first TensorFlow operation of the process. It hides every GPU
but the chosen one (none for the CPU) and turns on memory growth, because by
default TensorFlow reserves almost all the memory of every GPU it can use, which
breaks several processes per GPU.

Without a GPU, every policy but an explicit ``"gpu"`` runs on the CPU unchanged.
"""

from dataclasses import dataclass

import numpy as np

__all__ = [
    "DEVICE_POLICIES",
    "MISSING_GPU_ACTIONS",
    "DeviceChoice",
    "DeviceComparison",
    "DevicePlan",
    "GPUNotFoundError",
    "compare_devices",
    "configure_devices",
    "gpu_for_rank",
    "mixed_precision_model",
    "node_rank_and_size",
    "select_device",
]

DEVICE_POLICIES = ("auto", "cpu", "gpu")
MISSING_GPU_ACTIONS = ("error", "fallback")

# Largest |difference| allowed between two devices, relative to max |output| of the
# float32 CPU reference, in network space (before the amplitude transform). float32
# has a unit roundoff of 6e-8; a generator output passes through about five layers
# that each sum at most a few hundred products, so reordered sums differ by
# at most about 300 * 6e-8 = 2e-5 per layer, 1e-4 over the network.
FLOAT32_RTOL = 1.0e-4
# float16 has a unit roundoff of 4.9e-4; the same bound gives 0.15 in the worst
# case, but rounding errors add like a random walk: sqrt(300) * 4.9e-4 = 8e-3 per
# layer and sqrt(5) * 8e-3 = 2e-2 over five layers.
MIXED_FLOAT16_RTOL = 2.0e-2


class GPUNotFoundError(RuntimeError):
    """A GPU was requested but TensorFlow finds none."""


def gpu_for_rank(node_rank, n_gpus):
    """Return the index of the GPU that a process uses.

    Processes of one node are spread over its GPUs in turn, so with more processes
    than GPUs several processes share one.

    Args:
        node_rank (int): Rank of the process among those of its node, >= 0.
        n_gpus (int): GPUs visible to the process, >= 1.

    Returns:
        (int): ``node_rank % n_gpus``.
    """
    for name, value in (("node_rank", node_rank), ("n_gpus", n_gpus)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{name} must be an integer. Got {value!r} of type "
                            f"{type(value).__name__}.")
    if node_rank < 0:
        raise ValueError(f"node_rank must be >= 0. Got {node_rank}.")
    if n_gpus < 1:
        raise ValueError(f"n_gpus must be >= 1 to pick a GPU. Got {n_gpus}.")
    return int(node_rank) % int(n_gpus)


@dataclass(frozen=True)
class DeviceChoice:
    """The device kind a process uses and why.

    Attributes:
        kind (str): "cpu" or "gpu".
        gpu_index (int): Index of the GPU among those visible, None on the CPU.
        reason (str): One sentence for the log.
        fell_back (bool): True when a GPU was requested, none was found and the
            process runs on the CPU.
    """

    kind: str
    gpu_index: object
    reason: str
    fell_back: bool = False


def _check_choice(name, value, allowed):
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, one of {list(allowed)}. Got {value!r}.")
    if value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}. Got {value!r}.")


def select_device(policy, n_gpus, node_rank, on_missing_gpu="error"):
    """Decide on which device a process runs the generator.

    Args:
        policy (str): "auto" (a GPU when there is one, else the CPU), "cpu" or "gpu".
        n_gpus (int): GPUs visible to the process.
        node_rank (int): Rank of the process among those of its node.
        on_missing_gpu (str): With ``policy="gpu"`` and no GPU: "error" raises,
            "fallback" returns the CPU with ``fell_back=True``.

    Returns:
        (DeviceChoice): The device kind, GPU index and the reason.

    Raises:
        GPUNotFoundError: If ``policy="gpu"``, ``n_gpus == 0`` and
            ``on_missing_gpu="error"``.
    """
    _check_choice("device policy", policy, DEVICE_POLICIES)
    _check_choice("on_missing_gpu", on_missing_gpu, MISSING_GPU_ACTIONS)
    if policy == "cpu":
        return DeviceChoice("cpu", None, "device policy 'cpu'")
    if n_gpus > 0:
        index = gpu_for_rank(node_rank, n_gpus)
        return DeviceChoice(
            "gpu", index, f"node-local rank {node_rank} of {n_gpus} visible GPU(s) takes GPU {index}"
        )
    if policy == "auto":
        return DeviceChoice("cpu", None, "device policy 'auto' and no GPU visible")
    if on_missing_gpu == "fallback":
        return DeviceChoice(
            "cpu", None, "device policy 'gpu' but no GPU visible; falling back to the CPU",
            fell_back=True,
        )
    raise GPUNotFoundError(
        "A GPU was requested (device='gpu') but TensorFlow finds no GPU in this process "
        f"({_gpu_context()}). Run on a GPU node with a CUDA build of TensorFlow, "
        "set device='cpu' or 'auto', or set on_missing_gpu='fallback' to run on the CPU "
        "with a warning."
    )


def _gpu_context():
    """Return a short description of what decides GPU visibility, for messages."""
    import os

    import tensorflow as tf

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    cuda = "with CUDA" if tf.test.is_built_with_cuda() else "without CUDA"
    return (f"TensorFlow {tf.__version__} built {cuda}, CUDA_VISIBLE_DEVICES="
            f"{'unset' if visible is None else repr(visible)}")


def node_rank_and_size(comm=None):
    """Return the rank of this process among the processes of its node, and their number.

    Args:
        comm: A ``toast.Comm`` (its ``comm_world_node`` is used, no communication),
            an mpi4py communicator (split with ``COMM_TYPE_SHARED``; collective over
            that communicator) or None (a single process).

    Returns:
        (tuple): ``(node_rank, node_size)``.
    """
    if comm is None:
        return 0, 1
    if hasattr(comm, "comm_world_node"):
        node = comm.comm_world_node
        if node is None:
            return 0, 1
        return node.rank, node.size
    from mpi4py import MPI

    node = comm.Split_type(MPI.COMM_TYPE_SHARED, 0)
    try:
        return node.rank, node.size
    finally:
        node.Free()


@dataclass(frozen=True)
class DevicePlan:
    """Device plan of this process for the generator.

    Attributes:
        policy (str): The requested policy.
        kind (str): "cpu" or "gpu".
        device (str): TensorFlow device name for inference ("/CPU:0", "/GPU:0").
        gpu_index (int): Index of the chosen GPU among the GPUs the process saw
            first, None on the CPU.
        n_gpus (int): GPUs visible to the process before the choice.
        node_rank (int): Rank of the process on its node.
        node_size (int): Processes on the node.
        reason (str): Why this device.
        fell_back (bool): A GPU was requested and the CPU is used.
    """

    policy: str
    kind: str
    device: str
    gpu_index: object
    n_gpus: int
    node_rank: int
    node_size: int
    reason: str
    fell_back: bool = False


# The GPUs TensorFlow showed before configure_devices hid any, and the visibility
# set on the first call. TensorFlow accepts visibility changes only once per process.
_PHYSICAL_GPUS = None
_VISIBLE_GPU = "unset"


def _restrict_visibility(tf, gpus, index, memory_growth):
    """Make only ``gpus[index]`` visible (none for index None); return the device name.

    Returns None when TensorFlow had already started and the visibility stayed.
    """
    global _VISIBLE_GPU
    try:
        if index is None:
            if gpus:
                tf.config.set_visible_devices([], "GPU")
        else:
            tf.config.set_visible_devices(gpus[index], "GPU")
            if memory_growth:
                tf.config.experimental.set_memory_growth(gpus[index], True)
    except RuntimeError:
        return None
    _VISIBLE_GPU = index
    return "/CPU:0" if index is None else "/GPU:0"


def configure_devices(policy="auto", on_missing_gpu="error", comm=None, n_threads=0,
                      memory_growth=True):
    """Choose this process's device and set up TensorFlow before it starts.

    Sets the TensorFlow thread pools (see
    :func:`toast_crab.generation.configure_tensorflow_threads`), picks the GPU of the
    process's node-local rank (or the CPU), makes only that GPU visible and turns on
    its memory growth. TensorFlow accepts these settings only before its first
    operation, so a later call reuses the visibility set by the first one. If
    TensorFlow had already started, the choice is applied with device placement and
    a warning.

    Args:
        policy (str): "auto", "cpu" or "gpu" (see :func:`select_device`).
        on_missing_gpu (str): "error" or "fallback", used when ``policy="gpu"``
            and no GPU is visible. The fallback logs a warning.
        comm: ``toast.Comm``, an mpi4py communicator or None, for the node-local rank.
        n_threads (int): TensorFlow intra-op threads; 0 takes ``OMP_NUM_THREADS``.
        memory_growth (bool): Let TensorFlow grow its GPU memory on demand instead
            of reserving the whole GPU.

    Returns:
        (DevicePlan): The device to run on.

    Raises:
        GPUNotFoundError: If ``policy="gpu"``, no GPU is visible and
            ``on_missing_gpu="error"``.
    """
    global _PHYSICAL_GPUS
    from toast.utils import Logger

    from .generation import configure_tensorflow_threads

    _check_choice("device policy", policy, DEVICE_POLICIES)
    _check_choice("on_missing_gpu", on_missing_gpu, MISSING_GPU_ACTIONS)
    log = Logger.get()
    configure_tensorflow_threads(n_threads)
    import tensorflow as tf

    if _PHYSICAL_GPUS is None:
        _PHYSICAL_GPUS = list(tf.config.list_physical_devices("GPU"))
    node_rank, node_size = (0, 1) if policy == "cpu" else node_rank_and_size(comm)

    if _VISIBLE_GPU == "unset":
        gpus = _PHYSICAL_GPUS
        choice = select_device(policy, len(gpus), node_rank, on_missing_gpu)
        device = _restrict_visibility(tf, gpus, choice.gpu_index, memory_growth)
        if device is None:
            device = "/CPU:0" if choice.kind == "cpu" else f"/GPU:{choice.gpu_index}"
            log.warning(
                f"TensorFlow started before toast_crab set its devices, so every GPU stays "
                f"visible and its memory may be reserved; the generator runs on {device} "
                "by placement. Create the toast_crab operators before other code runs "
                "TensorFlow."
            )
        gpu_index = choice.gpu_index
    else:
        # Visibility was fixed by an earlier call: only that GPU (or none) is left.
        n_left = 0 if _VISIBLE_GPU is None else 1
        choice = select_device(policy, n_left, 0, on_missing_gpu)
        device = "/CPU:0" if choice.kind == "cpu" else "/GPU:0"
        gpu_index = None if choice.kind == "cpu" else _VISIBLE_GPU

    if choice.fell_back:
        log.warning(
            f"InjectCRAB: {choice.reason} ({_gpu_context()}). Set device='cpu' to "
            "silence this warning, or on_missing_gpu='error' to stop instead."
        )
    if choice.kind == "gpu":
        # NOTE: this branch has not run on a GPU in the test suite; scripts/gpu_check.sh
        # runs it on a GPU machine. TensorFloat-32 would round float32 convolutions
        # to 10-bit mantissas on Ampere and later GPUs; mixed precision is the fast
        # option, so float32 stays float32. Deterministic kernels make GPU runs repeat.
        tf.config.experimental.enable_tensor_float_32_execution(False)
        tf.config.experimental.enable_op_determinism()
    log.debug(f"toast_crab generator device {device}: {choice.reason}")
    return DevicePlan(
        policy=policy,
        kind=choice.kind,
        device=device,
        gpu_index=gpu_index,
        n_gpus=len(_PHYSICAL_GPUS),
        node_rank=node_rank,
        node_size=node_size,
        reason=choice.reason,
        fell_back=choice.fell_back,
    )


def mixed_precision_model(model):
    """Return a copy of a generator that computes in float16 with a float32 output.

    Every layer up to the last one with weights gets the Keras "mixed_float16" dtype
    policy (float32 variables, float16 computation). That layer and the ones after
    it stay float32, so the output keeps float32 range and precision near the end.
    The weights are copied.

    Args:
        model (keras.Model): A functional generator.

    Returns:
        (keras.Model): The mixed-precision copy.
    """
    import keras

    layers = list(model.layers)
    with_weights = [index for index, layer in enumerate(layers) if layer.weights]
    if not with_weights:
        raise ValueError(f"Model {model.name!r} has no layer with weights to cast.")
    output_start = with_weights[-1]
    float32_layers = {id(layer) for layer in layers[output_start:]}

    def clone_layer(layer):
        config = layer.get_config()
        config["dtype"] = "float32" if id(layer) in float32_layers else "mixed_float16"
        return layer.__class__.from_config(config)

    clone = keras.models.clone_model(model, clone_function=clone_layer)
    clone.set_weights(model.get_weights())
    return clone


@dataclass(frozen=True)
class DeviceComparison:
    """Outputs of one device against the float32 CPU reference, in network space.

    Attributes:
        device (str): The device checked.
        mixed_precision (bool): Whether it ran the mixed-precision copy.
        n_chunks (int): Chunks compared.
        max_abs_diff (float): Largest |device - reference|.
        reference_max_abs (float): Largest |reference|.
        rtol (float): Allowed ``max_abs_diff / reference_max_abs``.
        passed (bool): Whether the difference is within the tolerance.
    """

    device: str
    mixed_precision: bool
    n_chunks: int
    max_abs_diff: float
    reference_max_abs: float
    rtol: float
    passed: bool

    @property
    def relative_diff(self):
        """``max_abs_diff / reference_max_abs`` (0 for an all-zero reference)."""
        if self.reference_max_abs == 0:
            return 0.0
        return self.max_abs_diff / self.reference_max_abs


def compare_devices(bundle, device="/GPU:0", mixed_precision=False, n_chunks=512,
                    batch_size=256, realization=0, rtol=None):
    """Compare generator outputs on a device with the float32 CPU outputs.

    Both runs use the same latent vectors (``toast.rng`` streams of detector uids
    0..n_chunks-1, chunk 0) and the same batch size. The comparison is made on the
    network outputs, before the amplitude transform, whose exponential tail would
    magnify any difference.

    Args:
        bundle (Bundle): A loaded model bundle.
        device (str): TensorFlow device to check, such as "/GPU:0".
        mixed_precision (bool): Run the device under "mixed_float16".
        n_chunks (int): Chunks to compare.
        batch_size (int): Chunks per inference call.
        realization (int): Realization index of the latent streams.
        rtol (float): Allowed largest difference relative to max |reference|;
            None uses 1e-4 for float32 and 2e-2 for mixed precision.

    Returns:
        (DeviceComparison): The differences and the verdict.
    """
    import tensorflow as tf

    from .generation import draw_latents, stream_keys

    if rtol is None:
        rtol = MIXED_FLOAT16_RTOL if mixed_precision else FLOAT32_RTOL
    keys = [stream_keys(realization, 0, 0, stream) for stream in range(n_chunks)]
    latents = draw_latents(keys, [0] * n_chunks, bundle.latent_shape[0]).astype(np.float32)
    reference_model = bundle.generator
    checked_model = mixed_precision_model(reference_model) if mixed_precision else reference_model

    def run(model, device_name):
        spec = tf.TensorSpec((batch_size, latents.shape[1]), tf.float32)

        @tf.function(input_signature=[spec], autograph=False)
        def infer(z):
            with tf.device(device_name):
                return tf.cast(model(z, training=False), tf.float32)

        out = []
        for start in range(0, n_chunks, batch_size):
            batch = np.zeros((batch_size, latents.shape[1]), dtype=np.float32)
            rows = latents[start : start + batch_size]
            batch[: rows.shape[0]] = rows
            out.append(infer(batch).numpy().reshape(batch_size, -1)[: rows.shape[0]])
        return np.concatenate(out)

    reference = run(reference_model, "/CPU:0")
    checked = run(checked_model, device)
    max_abs_diff = float(np.max(np.abs(checked - reference)))
    reference_max_abs = float(np.max(np.abs(reference)))
    return DeviceComparison(
        device=device,
        mixed_precision=bool(mixed_precision),
        n_chunks=int(n_chunks),
        max_abs_diff=max_abs_diff,
        reference_max_abs=reference_max_abs,
        rtol=float(rtol),
        passed=bool(max_abs_diff <= rtol * reference_max_abs),
    )
