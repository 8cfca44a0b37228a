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
    "SequenceGenerator",
    "TILE_LATENTS",
    "draw_latent_tiles",
    "latent_windows",
    "make_generator",
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
        condition (tuple): Network-space condition values of a conditioned sequence
            generator (``(phi_gv - offset) / scale``); empty for unconditioned models.
    """

    keys: tuple
    first_sample: int
    n_samples: int
    condition: tuple = ()


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
            if request.condition:
                raise ValueError(
                    "This generator takes no condition, but a request carries "
                    f"{request.condition}. Only conditioned sequence models take one."
                )
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


# Latent positions per tile of a latent sequence. Part of the RNG layout: changing
# it changes every seamless timestream.
TILE_LATENTS = 64

# Tile indices can be negative (positions before the session, needed by the first
# blocks' halos), so their counters are offset by 2**39 to stay non-negative and
# apart from the chunk counters of the chunk families.
_TILE_OFFSET = 2**39


def draw_latent_tiles(keys, tile_indices, latent_channels, component=DEFAULT_COMPONENT):
    """Draw tiles of a latent sequence, ``TILE_LATENTS`` positions per tile.

    Tile ``k`` of a stream contains latent positions ``[k * TILE_LATENTS, (k + 1) *
    TILE_LATENTS)`` counted from the first sample of the session, and is one
    Threefry stream with ``counter1 = component * 2**40 + 2**39 + k``.

    Args:
        keys (list): ``(key1, key2)`` per tile.
        tile_indices (list): Tile index per item, in [-2**39, 2**39).
        latent_channels (int): Values per latent position.
        component (int): Component id in [0, 2**24).

    Returns:
        (ndarray): (n_items, TILE_LATENTS, latent_channels) float64.
    """
    import toast.rng

    component = int(component)
    if not 0 <= component < _MAX_COMPONENT:
        raise ValueError(f"component must be in [0, 2**24). Got {component}.")
    n_items = len(tile_indices)
    if n_items == 0:
        return np.zeros((0, TILE_LATENTS, latent_channels))
    tiles = [int(tile) for tile in tile_indices]
    bad = [tile for tile in tiles if not -_TILE_OFFSET <= tile < _TILE_OFFSET]
    if bad:
        raise ValueError(f"tile index must be in [-2**39, 2**39). Got {bad[0]}.")
    base = component * _MAX_CHUNK + _TILE_OFFSET
    counters = [(base + tile, 0) for tile in tiles]
    draws = toast.rng.random_multi(
        [TILE_LATENTS * latent_channels] * n_items,
        [tuple(k) for k in keys],
        counters,
        sampler="gaussian",
    )
    return np.stack([draw.array() for draw in draws]).reshape(
        n_items, TILE_LATENTS, latent_channels
    )


def latent_windows(keys, first_positions, n_positions, latent_channels,
                   component=DEFAULT_COMPONENT):
    """Return windows of latent sequences, each tile drawn once.

    Args:
        keys (list): ``(key1, key2)`` of the stream of each window.
        first_positions (list): First latent position of each window (may be < 0).
        n_positions (int): Positions per window.
        latent_channels (int): Values per position.
        component (int): Component id.

    Returns:
        (ndarray): (n_windows, n_positions, latent_channels) float32.
    """
    needed = {}
    spans = []
    for key, first in zip(keys, first_positions):
        first = int(first)
        t0 = first // TILE_LATENTS
        t1 = (first + n_positions - 1) // TILE_LATENTS
        spans.append((tuple(key), first, t0, t1))
        for tile in range(t0, t1 + 1):
            needed.setdefault((tuple(key), tile), None)
    order = list(needed)
    drawn = draw_latent_tiles(
        [key for key, _ in order], [tile for _, tile in order], latent_channels, component
    )
    for position, item in enumerate(order):
        needed[item] = drawn[position]
    out = np.empty((len(spans), n_positions, latent_channels), dtype=np.float32)
    for row, (key, first, t0, t1) in enumerate(spans):
        joined = np.concatenate([needed[(key, tile)] for tile in range(t0, t1 + 1)])
        start = first - t0 * TILE_LATENTS
        out[row] = joined[start : start + n_positions]
    return out


class SequenceGenerator:
    """Block-wise inference of a sequence (seamless) generator, in watts.

    The timeline of a stream is cut into blocks of ``block_latents`` latent positions
    (``block_latents * latent_stride`` samples) anchored at the first sample of the
    session. Block ``b`` runs the generator on latent positions ``[b * L - H,
    (b + 1) * L + H)`` (``L = block_latents``, ``H`` = the card's ``halo_latents``)
    and keeps the output samples of positions ``[b * L, (b + 1) * L)``. Neighbouring
    blocks share the latents of their overlap, and every kept sample lies at least
    ``H`` positions from the block edge, so the result equals one pass of the
    generator over the whole latent sequence up to float32 rounding.

    The latent sequence is drawn in tiles of ``TILE_LATENTS`` positions with the
    stream keys of :func:`stream_keys` (see :func:`draw_latent_tiles`). A sample's
    latents therefore do not depend on the block size, on the process that computes
    it, or on how the data are distributed.

    Args:
        bundle (Bundle): A loaded sequence-family bundle.
        batch_size (int): Blocks per inference call.
        block_latents (int): Latent positions per block, at least ``halo_latents``.
        component (int): RNG component id of the latent streams.
        device (str): TensorFlow device, or None.
        mixed_precision (bool): Run under the "mixed_float16" policy.
    """

    def __init__(self, bundle, batch_size=256, block_latents=256,
                 component=DEFAULT_COMPONENT, device=None, mixed_precision=False):
        import tensorflow as tf

        if not bundle.is_sequence:
            raise ValueError(
                f"Model {bundle.card['name']!r} of family {bundle.card['family']!r} is a "
                "chunk generator; use ChunkGenerator."
            )
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be at least 1. Got {batch_size}.")
        sequence = bundle.card["sequence"]
        self.stride = int(sequence["latent_stride"])
        self.halo = int(sequence["halo_latents"])
        if int(block_latents) < max(1, self.halo):
            raise ValueError(
                f"block_latents must be at least the model's halo of {self.halo} latent "
                f"positions (and at least 1). Got {block_latents}."
            )
        self.bundle = bundle
        self.batch_size = int(batch_size)
        self.block_latents = int(block_latents)
        self.block_length = self.block_latents * self.stride
        self.component = int(component)
        self.device = device
        self.mixed_precision = bool(mixed_precision)
        (self.latent_channels,) = bundle.latent_shape
        self.n_conditions = len(bundle.conditioning)
        model = bundle.generator
        if self.mixed_precision:
            from .devices import mixed_precision_model

            model = mixed_precision_model(model)
        self.model = model
        n_in = self.block_latents + 2 * self.halo
        latent_spec = tf.TensorSpec((self.batch_size, n_in, self.latent_channels), tf.float32)
        condition_spec = tf.TensorSpec((self.batch_size, max(self.n_conditions, 1)), tf.float32)
        conditioned = self.n_conditions > 0

        def run(z, c):
            inputs = [z, c] if conditioned else z
            y = tf.cast(model(inputs, training=False), tf.float32)
            return tf.reshape(y, (self.batch_size, -1))

        if device is None:

            @tf.function(input_signature=[latent_spec, condition_spec], autograph=False)
            def infer(z, c):
                return run(z, c)

        else:

            @tf.function(input_signature=[latent_spec, condition_spec], autograph=False)
            def infer(z, c):
                with tf.device(device):
                    return run(z, c)

        self._infer = infer

    def _check_requests(self, requests):
        for request in requests:
            if request.n_samples > 0 and request.first_sample < 0:
                raise ValueError(
                    f"first_sample must be >= 0 on the block grid. Got {request.first_sample}."
                )
            if len(request.condition) != self.n_conditions:
                names = sorted(self.bundle.conditioning) or "no condition"
                raise ValueError(
                    f"Model {self.bundle.card['name']!r} takes {names}, but a request "
                    f"carries {len(request.condition)} condition values."
                )

    def _work_batches(self, requests):
        """Yield ``(request_indices, block_indices)`` at most ``batch_size`` at a time."""
        pending_requests, pending_blocks, n_pending = [], [], 0
        for index, request in enumerate(requests):
            if request.n_samples <= 0:
                continue
            block = request.first_sample // self.block_length
            last = (request.first_sample + request.n_samples - 1) // self.block_length
            while block <= last:
                take = min(last + 1 - block, self.batch_size - n_pending)
                pending_requests.append(np.full(take, index, dtype=np.int64))
                pending_blocks.append(np.arange(block, block + take, dtype=np.int64))
                n_pending += take
                block += take
                if n_pending == self.batch_size:
                    yield np.concatenate(pending_requests), np.concatenate(pending_blocks)
                    pending_requests, pending_blocks, n_pending = [], [], 0
        if n_pending > 0:
            yield np.concatenate(pending_requests), np.concatenate(pending_blocks)

    def _block_latents(self, requests, request_indices, block_indices):
        """Assemble the (n, L + 2 H, channels) latent input of a list of blocks."""
        return latent_windows(
            [requests[index].keys for index in request_indices],
            [int(block) * self.block_latents - self.halo for block in block_indices],
            self.block_latents + 2 * self.halo,
            self.latent_channels,
            self.component,
        )

    def _run_blocks(self, latents, conditions):
        """Return the kept samples of at most one batch of blocks, in W.

        Args:
            latents (ndarray): (n, L + 2 H, channels) float32.
            conditions (ndarray): (n, n_conditions) float32.

        Returns:
            (ndarray): (n, block_length) float64, W.
        """
        n_rows = latents.shape[0]
        z = np.zeros((self.batch_size,) + latents.shape[1:], dtype=np.float32)
        z[:n_rows] = latents
        c = np.zeros((self.batch_size, max(self.n_conditions, 1)), dtype=np.float32)
        if self.n_conditions:
            c[:n_rows] = conditions
        y = self._infer(z, c).numpy()
        edge = self.halo * self.stride
        cropped = y[:n_rows, edge : edge + self.block_length]
        return self.bundle.transform.inverse(cropped)

    def iter_segments(self, requests):
        """Generate the requested sample ranges, one contiguous segment at a time.

        Same contract as :meth:`ChunkGenerator.iter_segments`, with blocks in place
        of chunks.

        Yields:
            (tuple): ``(request_index, offset, values_w)``.
        """
        self._check_requests(requests)
        length = self.block_length
        for request_indices, block_indices in self._work_batches(requests):
            latents = self._block_latents(requests, request_indices, block_indices)
            conditions = np.array(
                [requests[index].condition for index in request_indices], dtype=np.float32
            ).reshape(len(request_indices), self.n_conditions)
            values = self._run_blocks(latents, conditions)
            changes = np.flatnonzero(np.diff(request_indices)) + 1
            starts = np.concatenate(([0], changes))
            stops = np.concatenate((changes, [request_indices.size]))
            for start, stop in zip(starts, stops):
                request = requests[request_indices[start]]
                run_first = int(block_indices[start]) * length
                lo = max(run_first, request.first_sample)
                hi = min(int(block_indices[stop - 1] + 1) * length,
                         request.first_sample + request.n_samples)
                flat = values[start:stop].reshape(-1)
                yield (
                    int(request_indices[start]),
                    lo - request.first_sample,
                    flat[lo - run_first : hi - run_first],
                )

    def one_pass(self, keys, n_samples, condition=()):
        """Run the generator once over a whole stream from the session start.

        Reference for the block-wise path: the same latent sequence through one
        generator call, cropped to ``[0, n_samples)``. Meant for tests and short
        streams.

        Args:
            keys (tuple): ``(key1, key2)`` of the stream.
            n_samples (int): Samples from the session start.
            condition (tuple): Network-space condition values.

        Returns:
            (ndarray): (n_samples,) float64, W.
        """
        n_latent = -(-int(n_samples) // self.stride)
        z = latent_windows(
            [keys], [-self.halo], n_latent + 2 * self.halo, self.latent_channels,
            self.component,
        )[0]
        inputs = [z[None].astype(np.float32)]
        if self.n_conditions:
            inputs.append(np.asarray(condition, dtype=np.float32).reshape(1, -1))
        y = np.asarray(self.model(inputs if self.n_conditions else inputs[0], training=False))
        y = y.reshape(-1)[self.halo * self.stride :][: int(n_samples)]
        return self.bundle.transform.inverse(y)


def make_generator(bundle, batch_size=256, block_latents=256, component=DEFAULT_COMPONENT,
                   device=None, mixed_precision=False):
    """Return the generator runner that fits a bundle: chunk or sequence.

    Args:
        bundle (Bundle): A loaded bundle.
        batch_size (int): Chunks (or blocks) per inference call.
        block_latents (int): Latent positions per block of a sequence model.
        component, device, mixed_precision: As for :class:`ChunkGenerator`.

    Returns:
        (ChunkGenerator or SequenceGenerator)
    """
    if bundle.is_sequence:
        return SequenceGenerator(
            bundle, batch_size=batch_size, block_latents=block_latents, component=component,
            device=device, mixed_precision=mixed_precision,
        )
    return ChunkGenerator(
        bundle, batch_size=batch_size, component=component, device=device,
        mixed_precision=mixed_precision,
    )
