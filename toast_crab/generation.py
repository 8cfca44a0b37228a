"""Turn (model bundle, stream keys, sample ranges) into cosmic-ray timestreams.

This layer knows nothing of TOAST observations; the operators translate their
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
    packing does not change the output.
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
    counters = []
    for chunk in chunk_indices:
        chunk = int(chunk)
        if not 0 <= chunk < _MAX_CHUNK:
            raise ValueError(f"chunk index must be in [0, 2**40). Got {chunk}.")
        counters.append((component * _MAX_CHUNK + chunk, 0))
    draws = toast.rng.random_multi(
        [latent_dim] * n_items, [tuple(k) for k in keys], counters, sampler="gaussian"
    )
    return np.stack([np.asarray(d.array(), dtype=np.float64) for d in draws])


_THREADS_SET = None


def configure_tensorflow_threads(n_threads):
    """Set TensorFlow's thread pools once per process, before its first operation.

    Args:
        n_threads (int): Intra-op threads; 0 takes ``OMP_NUM_THREADS`` (1 if unset),
            so a rank uses the cores TOAST gives it and no more.

    Returns:
        (int): The thread count in force.
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
        # TensorFlow was initialized by other code first; its pools stay as they are.
        _THREADS_SET = tf.config.threading.get_intra_op_parallelism_threads()
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
        batch_size (int): Chunks per inference call. The output bits depend on it, so
            keep it fixed to reproduce a run.
        component (int): RNG component id of the latent streams.
    """

    def __init__(self, bundle, batch_size=256, component=DEFAULT_COMPONENT):
        import tensorflow as tf

        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be at least 1. Got {batch_size}.")
        self.bundle = bundle
        self.batch_size = int(batch_size)
        self.component = int(component)
        self.chunk_length = bundle.chunk_length
        (self.latent_dim,) = bundle.latent_shape
        model = bundle.generator
        spec = tf.TensorSpec((self.batch_size, self.latent_dim), tf.float32)

        @tf.function(input_signature=[spec], autograph=False)
        def infer(z):
            return model(z, training=False)

        self._infer = infer

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
            batch = np.zeros((self.batch_size, self.latent_dim), dtype=np.float32)
            batch[: stop - start] = latents[start:stop]
            y = self._infer(batch).numpy().reshape(self.batch_size, self.chunk_length)
            out[start:stop] = self.bundle.transform.inverse(y[: stop - start])
        return out

    def _work_items(self, requests):
        # One item per (request, chunk) pair that overlaps the request's samples.
        items = []
        for index, request in enumerate(requests):
            if request.n_samples <= 0:
                continue
            if request.first_sample < 0:
                raise ValueError(
                    f"first_sample must be >= 0 on the chunk grid. Got {request.first_sample}."
                )
            first_chunk = request.first_sample // self.chunk_length
            last_chunk = (request.first_sample + request.n_samples - 1) // self.chunk_length
            items.extend((index, chunk) for chunk in range(first_chunk, last_chunk + 1))
        return items

    def iter_segments(self, requests):
        """Generate the requested sample ranges, one chunk overlap at a time.

        Memory stays at one batch of chunks, whatever the number of samples.

        Args:
            requests (list): :class:`StreamRequest` objects.

        Yields:
            (tuple): ``(request_index, offset, values_w)``: add ``values_w``
            ((n,) float64, W) to samples ``[offset, offset + n)`` of the request.
        """
        items = self._work_items(requests)
        for start in range(0, len(items), self.batch_size):
            batch_items = items[start : start + self.batch_size]
            keys = [requests[index].keys for index, _ in batch_items]
            chunks = [chunk for _, chunk in batch_items]
            latents = draw_latents(keys, chunks, self.latent_dim, self.component)
            values = self.generate_chunks(latents)
            for row, (index, chunk) in enumerate(batch_items):
                request = requests[index]
                chunk_first = chunk * self.chunk_length
                lo = max(chunk_first, request.first_sample)
                hi = min(chunk_first + self.chunk_length, request.first_sample + request.n_samples)
                yield index, lo - request.first_sample, values[row, lo - chunk_first : hi - chunk_first]
