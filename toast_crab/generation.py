"""Turn (model bundle, stream keys, sample ranges) into cosmic-ray timestreams.

This layer does not use TOAST observations. The operators translate their
observations into :class:`StreamRequest` objects.

Random numbers
    Each chunk's latent vector is drawn from TOAST's counter-based RNG
    (Threefry2x64, ``toast.rng``) with

    * ``key1 = realization * 2**32 + telescope_uid``
    * ``key2 = session_uid * 2**32 + detector_uid``
    * ``counter1 = component * 2**40 + chunk_index``, ``counter2`` = latent element.

    Every term is a global identity (uids are 31-bit name hashes), so the latents do
    not depend on the MPI process grid, the detector order or the batch order.

Chunk grid
    Chunk ``k`` covers samples ``[k * chunk_length, (k + 1) * chunk_length)`` counted
    from the first sample of the session. A process holding any sample range
    generates the chunks that overlap it and keeps the overlap.

Batching
    Chunks from all requests are packed into batches of a fixed size; the last batch
    is padded with zero latents. Keras inference on CPU gives bit-identical rows for a
    fixed batch size whatever the other rows hold (checked by the test suite), so
    packing does not change the output. With one TensorFlow thread the rows are also
    the same for every batch size; with several threads that holds for batch sizes
    that are multiples of 4 (measured with TensorFlow 2.21 and oneDNN on AMD EPYC).

Memory
    :meth:`ChunkGenerator.iter_segments` builds its work list lazily, one batch at a
    time, so the memory it keeps is a few batches of chunks whatever the number of
    requested samples.
"""

import os
from dataclasses import dataclass

import numpy as np

__all__ = [
    "DEFAULT_COMPONENT",
    "ChunkGenerator",
    "StreamRequest",
    "configure_tensorflow_threads",
    "draw_latents",
    "stream_keys",
]

# Component id of InjectCRAB streams (ASCII "CR" = 0x4352), distinct from the
# component ids that TOAST's own simulation operators use by default.
DEFAULT_COMPONENT = 0x4352

_MAX_REALIZATION = 2**31
_MAX_COMPONENT = 2**24
_MAX_CHUNK = 2**40


def stream_keys(realization, telescope_uid, session_uid, detector_uid):
    """Return the RNG key pair ``(key1, key2)`` of one detector stream.

    Args:
        realization (int): Realization index in [0, 2**31).
        telescope_uid (int): Telescope uid (31-bit; numpy integers are cast).
        session_uid (int): Session uid.
        detector_uid (int): Detector uid.
    """
    realization = int(realization)
    if not 0 <= realization < _MAX_REALIZATION:
        raise ValueError(f"realization must be in [0, 2**31). Got {realization}.")
    uids = [int(telescope_uid), int(session_uid), int(detector_uid)]
    for label, uid in zip(("telescope", "session", "detector"), uids):
        if not 0 <= uid < 2**32:
            raise ValueError(f"{label} uid must be in [0, 2**32). Got {uid}.")
    return realization * 2**32 + uids[0], uids[1] * 2**32 + uids[2]


def draw_latents(keys, chunk_indices, latent_dim, component=DEFAULT_COMPONENT):
    """Draw one standard normal latent vector per (stream, chunk).

    Args:
        keys (list): ``(key1, key2)`` per item.
        chunk_indices (list): Absolute chunk index per item, in [0, 2**40).
        latent_dim (int): Length of each latent vector.
        component (int): Component id in [0, 2**24).

    Returns:
        (ndarray): (n_items, latent_dim) float64.
    """
    import toast.rng

    component = int(component)
    if not 0 <= component < _MAX_COMPONENT:
        raise ValueError(f"component must be in [0, 2**24). Got {component}.")
    n_items = len(chunk_indices)
    if n_items == 0:
        return np.zeros((0, latent_dim))
    chunks = [int(chunk) for chunk in chunk_indices]
    bad = [chunk for chunk in chunks if not 0 <= chunk < _MAX_CHUNK]
    if bad:
        raise ValueError(f"chunk index must be in [0, 2**40). Got {bad[0]}.")
    base = component * _MAX_CHUNK
    counters = [(base + chunk, 0) for chunk in chunks]
    draws = toast.rng.random_multi(
        [latent_dim] * n_items, [tuple(k) for k in keys], counters, sampler="gaussian"
    )
    return np.stack([draw.array() for draw in draws])


_THREADS_SET = None


def configure_tensorflow_threads(n_threads):
    """Set TensorFlow's thread pools once per process, before its first operation.

    Args:
        n_threads (int): Intra-op threads; 0 takes ``OMP_NUM_THREADS`` (1 if unset),
            so a rank uses the cores TOAST gives it and no more.

    Returns:
        (int): The thread count in force (0 means TensorFlow's default, one thread
        per core).
    """
    global _THREADS_SET
    if n_threads <= 0:
        n_threads = int(os.environ.get("OMP_NUM_THREADS", "1") or 1)
    if _THREADS_SET is not None:
        return _THREADS_SET
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(n_threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        _THREADS_SET = n_threads
    except RuntimeError:
        from toast.utils import Logger

        # TensorFlow was initialized by other code first; its pools stay as they are.
        _THREADS_SET = tf.config.threading.get_intra_op_parallelism_threads()
        Logger.get().warning(
            f"TensorFlow started before toast_crab could set its threads, so it keeps "
            f"{_THREADS_SET or 'one per core'} intra-op threads instead of {n_threads}. "
            "With several MPI processes per node this oversubscribes the cores; create "
            "the toast_crab operators (or call configure_tensorflow_threads) before "
            "other code runs TensorFlow."
        )
    return _THREADS_SET


@dataclass(frozen=True)
class StreamRequest:
    """One detector's sample range to fill.

    Attributes:
        keys (tuple): ``(key1, key2)`` from :func:`stream_keys`.
        first_sample (int): Index of the first requested sample on the session's
            chunk grid (0 = first sample of the session).
        n_samples (int): Number of requested samples.
    """

    keys: tuple
    first_sample: int
    n_samples: int


class ChunkGenerator:
    """Batched inference of a bundle's generator, in watts.

    Args:
        bundle (Bundle): A loaded model bundle.
        batch_size (int): Chunks per inference call. The output bits depend on it on
            some hardware, so keep it fixed to reproduce a run.
        component (int): RNG component id of the latent streams.
        device (str): TensorFlow device that runs the generator, such as "/CPU:0" or
            "/GPU:0"; None leaves the placement to TensorFlow.
        mixed_precision (bool): Run the generator under the Keras "mixed_float16"
            policy with a float32 output layer (meant for GPUs).
    """

    def __init__(self, bundle, batch_size=256, component=DEFAULT_COMPONENT, device=None,
                 mixed_precision=False):
        import tensorflow as tf

        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be at least 1. Got {batch_size}.")
        self.bundle = bundle
        self.batch_size = int(batch_size)
        self.component = int(component)
        self.device = device
        self.mixed_precision = bool(mixed_precision)
        self.chunk_length = bundle.chunk_length
        (self.latent_dim,) = bundle.latent_shape
        model = bundle.generator
        if self.mixed_precision:
            from .devices import mixed_precision_model

            model = mixed_precision_model(model)
        self.model = model
        spec = tf.TensorSpec((self.batch_size, self.latent_dim), tf.float32)

        if device is None:

            @tf.function(input_signature=[spec], autograph=False)
            def infer(z):
                return tf.cast(model(z, training=False), tf.float32)

        else:

            @tf.function(input_signature=[spec], autograph=False)
            def infer(z):
                with tf.device(device):
                    return tf.cast(model(z, training=False), tf.float32)

        self._infer = infer

    def _run_batch(self, latents):
        """Return generator outputs in W for at most one batch of latent vectors.

        Args:
            latents (ndarray): (n, latent_dim) latent vectors, n <= batch_size.

        Returns:
            (ndarray): (n, chunk_length) float64, W.
        """
        n_rows = latents.shape[0]
        batch = np.zeros((self.batch_size, self.latent_dim), dtype=np.float32)
        batch[:n_rows] = latents
        y = self._infer(batch).numpy().reshape(self.batch_size, self.chunk_length)
        return self.bundle.transform.inverse(y[:n_rows])

    def generate_chunks(self, latents):
        """Run the generator on latent vectors and return chunks in watts.

        Args:
            latents (ndarray): (n_chunks, latent_dim) float64.

        Returns:
            (ndarray): (n_chunks, chunk_length) float64, W.
        """
        latents = np.asarray(latents, dtype=np.float32)
        n_chunks = latents.shape[0]
        out = np.empty((n_chunks, self.chunk_length), dtype=np.float64)
        for start in range(0, n_chunks, self.batch_size):
            stop = min(start + self.batch_size, n_chunks)
            out[start:stop] = self._run_batch(latents[start:stop])
        return out

    def _chunk_range(self, request):
        """Return the first and last chunk index that overlap a request."""
        first_chunk = request.first_sample // self.chunk_length
        last_chunk = (request.first_sample + request.n_samples - 1) // self.chunk_length
        return first_chunk, last_chunk

    def _work_batches(self, requests):
        """Yield the (request, chunk) work items, at most ``batch_size`` at a time.

        Items come ordered by request, then chunk, so the chunks of one request
        inside a batch are consecutive.

        Yields:
            (tuple): ``(request_indices, chunk_indices)``, two (n,) int64 arrays.
        """
        pending_requests = []
        pending_chunks = []
        n_pending = 0
        for index, request in enumerate(requests):
            if request.n_samples <= 0:
                continue
            chunk, last_chunk = self._chunk_range(request)
            while chunk <= last_chunk:
                take = min(last_chunk + 1 - chunk, self.batch_size - n_pending)
                pending_requests.append(np.full(take, index, dtype=np.int64))
                pending_chunks.append(np.arange(chunk, chunk + take, dtype=np.int64))
                n_pending += take
                chunk += take
                if n_pending == self.batch_size:
                    yield np.concatenate(pending_requests), np.concatenate(pending_chunks)
                    pending_requests, pending_chunks, n_pending = [], [], 0
        if n_pending > 0:
            yield np.concatenate(pending_requests), np.concatenate(pending_chunks)

    @staticmethod
    def _check_requests(requests):
        for request in requests:
            if request.n_samples > 0 and request.first_sample < 0:
                raise ValueError(
                    f"first_sample must be >= 0 on the chunk grid. Got {request.first_sample}."
                )

    def iter_segments(self, requests):
        """Generate the requested sample ranges, one contiguous segment at a time.

        Each batch of chunks yields one segment per request it touches: the chunks
        of a request in a batch are adjacent on the chunk grid, so they form one
        contiguous stretch of samples. Memory stays at a few batches of chunks,
        whatever the number of samples.

        Args:
            requests (list): :class:`StreamRequest` objects.

        Yields:
            (tuple): ``(request_index, offset, values_w)``: add ``values_w``
            ((n,) float64, W) to samples ``[offset, offset + n)`` of the request.

        Raises:
            ValueError: If a request starts before the chunk grid, before anything
                is yielded.
        """
        self._check_requests(requests)
        length = self.chunk_length
        for request_indices, chunk_indices in self._work_batches(requests):
            keys = [requests[index].keys for index in request_indices]
            latents = draw_latents(keys, chunk_indices, self.latent_dim, self.component)
            values = self._run_batch(latents)

            # Rows [starts[i], stops[i]) of the batch belong to one request.
            changes = np.flatnonzero(np.diff(request_indices)) + 1
            starts = np.concatenate(([0], changes))
            stops = np.concatenate((changes, [request_indices.size]))
            for start, stop in zip(starts, stops):
                request = requests[request_indices[start]]
                run_first = int(chunk_indices[start]) * length
                lo = max(run_first, request.first_sample)
                hi = min(int(chunk_indices[stop - 1] + 1) * length,
                         request.first_sample + request.n_samples)
                flat = values[start:stop].reshape(-1)
                yield (
                    int(request_indices[start]),
                    lo - request.first_sample,
                    flat[lo - run_first : hi - run_first],
                )
