"""ChunkGenerator: batched output against a one-chunk-at-a-time reference, order
invariance and bounded memory."""

import tracemalloc

import numpy as np
import pytest
import toast.rng

from helpers import write_tiny_bundle
from toast_crab.bundle import load_bundle
from toast_crab.generation import (
    DEFAULT_COMPONENT,
    ChunkGenerator,
    StreamRequest,
    draw_latents,
    stream_keys,
)

# Inference of one chunk at a time in eager mode sums in another order than a batch
# in graph mode, so outputs differ by float32 rounding: up to 4e-7 of the largest
# |value| for the CRAB generator (measured). 1e-5 is about 100 float32 ulps.
REFERENCE_RTOL = 1.0e-5


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return load_bundle(write_tiny_bundle(tmp_path_factory.mktemp("bundle"), chunk_length=64))


def _requests(chunk_length):
    """Requests with unaligned starts, partial chunks, one empty and one inside a chunk."""
    keys = [stream_keys(2, 11, 22, uid) for uid in (5, 6, 7, 8, 9)]
    return [
        StreamRequest(keys[0], first_sample=0, n_samples=5 * chunk_length),
        StreamRequest(keys[1], first_sample=37, n_samples=3 * chunk_length + 5),
        StreamRequest(keys[2], first_sample=chunk_length - 1, n_samples=2),
        StreamRequest(keys[3], first_sample=10, n_samples=0),
        StreamRequest(keys[4], first_sample=7 * chunk_length + 3, n_samples=20),
    ]


def _assemble(generator, requests):
    out = [np.zeros(request.n_samples) for request in requests]
    counts = [np.zeros(request.n_samples, dtype=int) for request in requests]
    for index, offset, values_w in generator.iter_segments(requests):
        out[index][offset : offset + values_w.size] += values_w
        counts[index][offset : offset + values_w.size] += 1
    return out, counts


def _reference(bundle, request):
    """One chunk at a time: toast.rng latent, eager Keras call, inverse transform."""
    length = bundle.chunk_length
    first = request.first_sample // length
    last = (request.first_sample + request.n_samples - 1) // length
    chunks = []
    for chunk in range(first, last + 1):
        latent = toast.rng.random(
            bundle.latent_shape[0],
            key=request.keys,
            counter=(DEFAULT_COMPONENT * 2**40 + chunk, 0),
            sampler="gaussian",
        ).array()
        y = bundle.generator(latent[None].astype(np.float32), training=False)
        chunks.append(bundle.transform.inverse(np.asarray(y).reshape(-1)))
    start = request.first_sample - first * length
    return np.concatenate(chunks)[start : start + request.n_samples]


def test_batched_matches_reference(bundle):
    requests = _requests(bundle.chunk_length)
    # A batch of 4 splits requests across batches and mixes them inside one.
    out, counts = _assemble(ChunkGenerator(bundle, batch_size=4), requests)
    for request, values, count in zip(requests, out, counts):
        assert np.all(count == 1)
        if request.n_samples == 0:
            continue
        expected = _reference(bundle, request)
        scale = np.max(np.abs(expected))
        assert scale > 0
        np.testing.assert_allclose(values, expected, rtol=0, atol=REFERENCE_RTOL * scale)


def test_batched_order_invariant(bundle):
    requests = _requests(bundle.chunk_length)
    generator = ChunkGenerator(bundle, batch_size=4)
    reference, _ = _assemble(generator, requests)
    rng = np.random.default_rng(4)
    for _ in range(3):
        order = rng.permutation(len(requests))
        shuffled, _ = _assemble(generator, [requests[i] for i in order])
        for position, index in enumerate(order):
            np.testing.assert_array_equal(shuffled[position], reference[index])


def test_batched_split_requests_match(bundle):
    # A request cut in two at any sample gives the same samples as the whole.
    length = bundle.chunk_length
    whole = StreamRequest(stream_keys(0, 1, 2, 3), first_sample=5, n_samples=4 * length)
    generator = ChunkGenerator(bundle, batch_size=4)
    (full,), _ = _assemble(generator, [whole])
    for cut in (1, length - 5, length + 17):
        parts = [
            StreamRequest(whole.keys, whole.first_sample, cut),
            StreamRequest(whole.keys, whole.first_sample + cut, whole.n_samples - cut),
        ]
        (head, tail), _ = _assemble(generator, parts)
        np.testing.assert_array_equal(np.concatenate([head, tail]), full)


def test_generate_chunks_matches_segments(bundle):
    length = bundle.chunk_length
    request = StreamRequest(stream_keys(1, 2, 3, 4), first_sample=0, n_samples=6 * length)
    generator = ChunkGenerator(bundle, batch_size=4)
    latents = draw_latents([request.keys] * 6, range(6), generator.latent_dim)
    chunks = generator.generate_chunks(latents)
    assert chunks.shape == (6, length)
    assert chunks.dtype == np.float64
    (segments,), _ = _assemble(generator, [request])
    np.testing.assert_array_equal(chunks.reshape(-1), segments)
    assert generator.generate_chunks(np.zeros((0, generator.latent_dim))).shape == (0, length)


def test_segments_memory_bounded(bundle):
    # Peak Python/NumPy memory while streaming must not grow with the number of
    # samples: a list of work items would add about 100 bytes per chunk, 2 MB for
    # the long case, against the 256 KiB allowed.
    length = bundle.chunk_length
    generator = ChunkGenerator(bundle, batch_size=64)

    def traced_peak(n_chunks):
        request = StreamRequest(stream_keys(0, 1, 2, 3), 0, n_chunks * length)
        tracemalloc.start()
        total = 0.0
        for _, _, values_w in generator.iter_segments([request]):
            total += float(values_w.sum())
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert np.isfinite(total)
        return peak

    traced_peak(64)  # trace the tf.function outside the measurement
    short = traced_peak(2_000)
    long = traced_peak(20_000)
    assert long < short + 256 * 1024


def test_negative_first_sample_rejected(bundle):
    generator = ChunkGenerator(bundle, batch_size=4)
    good = StreamRequest(stream_keys(0, 1, 2, 3), 0, 10)
    bad = StreamRequest(stream_keys(0, 1, 2, 4), -5, 10)
    segments = generator.iter_segments([good, bad])
    with pytest.raises(ValueError, match="first_sample must be >= 0 on the chunk grid. Got -5"):
        next(segments)


def test_bad_batch_size_rejected(bundle):
    with pytest.raises(ValueError, match="batch_size must be at least 1. Got 0"):
        ChunkGenerator(bundle, batch_size=0)


def test_chunk_index_out_of_range_rejected():
    keys = [stream_keys(0, 1, 2, 3)]
    with pytest.raises(ValueError, match=r"chunk index must be in \[0, 2\*\*40\). Got -1"):
        draw_latents(keys, [-1], 4)
