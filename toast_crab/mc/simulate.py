"""Continuous MC timelines of cosmic-ray hits and training chunks cut from them.

One MC run is one continuous timeline: Poisson hits on the wafer and on each TES island,
species and energies drawn from the modulated spectra, isotropic tracks, energy deposits,
TES response on the internal grid, anti-alias filter and decimation. The timeline is built
block by block with the filter states carried over, and starts with a discarded pre-roll so
that pulse tails and the filter are in steady state at t = 0.
"""

import concurrent.futures
import dataclasses

import numpy as np

from toast_crab import _version
from toast_crab.mc.blocks import GroupResponse
from toast_crab.mc.config import MCConfig
from toast_crab.mc.hits import HIT_UNIFORMS, HitSampler
from toast_crab.mc.readout import Decimator, ExponentialPulseSynthesizer, pre_roll_s
from toast_crab.mc.response import detector_positions_m

__all__ = [
    "BlockHits",
    "TimelineSimulator",
    "SimulatedTimestream",
    "TrainingChunks",
    "LABEL_NAMES",
    "simulate_timestream",
    "simulate_training_chunks",
]

# Per-chunk labels returned by ``simulate_training_chunks``.
LABEL_NAMES = (
    "phi_gv",
    "n_direct_hits",
    "n_wafer_hits",
    "max_deposit_kev",
    "max_direct_deposit_kev",
    "max_wafer_deposit_kev",
    "run_id",
    "chunk_index",
    "start_time_s",
)

_DEFAULT_BLOCK_SAMPLES = 1060


@dataclasses.dataclass(frozen=True)
class BlockHits:
    """Hits that started inside one block of a timeline.

    Attributes:
        n_wafer_hits (int): Particles that crossed the wafer.
        n_direct_hits (ndarray): (n_det,) int64, particles that crossed each TES island.
        max_wafer_deposit_kev (float): Largest wafer deposit, keV (0 without hits).
        max_direct_deposit_kev (float): Largest island deposit, keV (0 without hits).
    """

    n_wafer_hits: int
    n_direct_hits: np.ndarray
    max_wafer_deposit_kev: float
    max_direct_deposit_kev: float


def _check_rng(rng):
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"rng must be a numpy.random.Generator, got {type(rng).__name__}; create one with "
            "numpy.random.default_rng(numpy.random.SeedSequence(seed))"
        )


def _check_count(name, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {value!r} of type {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return int(value)


class TimelineSimulator:
    """One continuous MC timeline for a group of detectors on one wafer.

    Construction simulates and discards the pre-roll (``readout.pre_roll_s``); each call of
    ``next_block`` then returns the following samples. Hits are drawn by ``HitSampler``
    from uniforms of ``rng``.

    Args:
        config (MCConfig): MC configuration.
        rng (numpy.random.Generator): Random source, used by this timeline only.
        n_detectors (int): Detectors on the wafer to simulate.
        phi_gv (float, optional): Modulation potential, GV; ``config.phi_gv`` if None
            (``environment.phi_gv``, or phi at ``environment.mission_date``).

    Attributes:
        phi_gv (float): Modulation potential used, GV.
        positions_m (ndarray): (n_det, 2) float64, detector positions from the wafer centre, m.
        wafer_rate_hz (float): Expected wafer hit rate, Phi A / 2, s^-1.
        island_rate_hz (float): Expected direct-hit rate per detector, s^-1.
        time_s (float): Time of the next output sample, s.
    """

    def __init__(self, config, rng, n_detectors=1, phi_gv=None):
        if not isinstance(config, MCConfig):
            raise TypeError(f"config must be an MCConfig, got {type(config).__name__}")
        _check_rng(rng)
        self.config = config
        self.rng = rng
        self.n_detectors = _check_count("n_detectors", n_detectors)
        self.sampler = HitSampler(config, phi_gv)
        self.phi_gv = self.sampler.phi_gv
        self.wafer_rate_hz = self.sampler.wafer_rate_hz
        self.island_rate_hz = self.sampler.island_rate_hz

        readout = config.readout
        self.positions_m = detector_positions_m(self.n_detectors, config.wafer)
        self.response = GroupResponse(config, self.positions_m)
        self.coupling = self.response.coupling
        self._factor = readout.decimation_factor
        self._internal_rate_hz = self._factor * readout.sample_rate_hz
        self._sample_rate_hz = readout.sample_rate_hz
        self._synth = ExponentialPulseSynthesizer(
            self.n_detectors, self.response.tau_s, self._internal_rate_hz
        )
        self._decimator = Decimator(self.n_detectors, readout)
        self._sign = 1.0 if readout.sign_convention == "optical" else -1.0
        self._noise_sigma_w = readout.nep_w_per_rthz * np.sqrt(0.5 * readout.sample_rate_hz)

        n_pre = int(np.ceil(pre_roll_s(config) * readout.sample_rate_hz))
        self.time_s = -n_pre / readout.sample_rate_hz
        while n_pre > 0:
            step = min(n_pre, _DEFAULT_BLOCK_SAMPLES)
            self.next_block(step)
            n_pre -= step

    def next_block(self, n_samples):
        """Simulate the next ``n_samples`` output samples of the timeline.

        Args:
            n_samples (int): Output samples in the block.

        Returns:
            tuple: (power_w, hits) with power_w a (n_det, n_samples) float64 array of dP_opt
            (or dP_J for the "joule" convention) in W, and hits a ``BlockHits``.
        """
        n_bins = n_samples * self._factor
        duration_s = n_bins / self._internal_rate_hz
        rng = self.rng
        n_det = self.n_detectors

        # Wafer hits are common to all detectors. Island hits are independent Poisson
        # streams, drawn here as one stream over all islands with a uniform detector choice.
        n_wafer = rng.poisson(self.wafer_rate_hz * duration_s)
        wafer_hits = self.sampler.hits("wafer", rng.random((n_wafer, HIT_UNIFORMS)), duration_s)
        n_island = rng.poisson(self.island_rate_hz * duration_s * n_det)
        island_hits = self.sampler.hits("island", rng.random((n_island, HIT_UNIFORMS)), duration_s)
        island_channel = rng.integers(0, n_det, n_island)

        pulses = self.response.pulses(wafer_hits, island_hits, island_channel)
        internal = self._synth.render(n_bins, pulses)
        power_w = self._decimator.process(internal)
        power_w *= self._sign
        if self._noise_sigma_w > 0.0:
            power_w += self._noise_sigma_w * rng.standard_normal(power_w.shape)

        self.time_s += n_samples / self._sample_rate_hz
        hits = BlockHits(
            n_wafer_hits=int(n_wafer),
            n_direct_hits=np.bincount(island_channel, minlength=n_det).astype(np.int64),
            max_wafer_deposit_kev=wafer_hits.max_deposit_kev,
            max_direct_deposit_kev=island_hits.max_deposit_kev,
        )
        return power_w, hits


@dataclasses.dataclass(frozen=True)
class SimulatedTimestream:
    """Output of ``simulate_timestream``.

    Attributes:
        power_w (ndarray): (n_det, n_samples) float64, W, power change (sign per
            ``ReadoutConfig.sign_convention``), no-CR level removed.
        sample_rate_hz (float): Sample rate, Hz.
        phi_gv (float): Modulation potential, GV.
        n_wafer_hits (int): Wafer hits that started in the returned interval.
        n_direct_hits (ndarray): (n_det,) int64, island hits per detector in the interval.
        wafer_rate_hz (float): Expected wafer hit rate, s^-1.
        island_rate_hz (float): Expected island hit rate per detector, s^-1.
    """

    power_w: np.ndarray
    sample_rate_hz: float
    phi_gv: float
    n_wafer_hits: int
    n_direct_hits: np.ndarray
    wafer_rate_hz: float
    island_rate_hz: float


def simulate_timestream(config, n_samples, rng, n_detectors=1, phi_gv=None,
                        block_samples=_DEFAULT_BLOCK_SAMPLES):
    """Simulate one continuous CR timestream for detectors on one wafer.

    Args:
        config (MCConfig): MC configuration.
        n_samples (int): Output samples.
        rng (numpy.random.Generator): Random source.
        n_detectors (int): Detectors on the wafer.
        phi_gv (float, optional): Modulation potential, GV; the configured value if None.
        block_samples (int): Samples simulated per block. The timeline for a given rng
            depends on it; with the default (1060) it equals the concatenated chunks of one
            run of ``simulate_training_chunks`` with ``chunk_length=1060``.

    Returns:
        SimulatedTimestream: Power, sample rate and hit counts.
    """
    n_samples = _check_count("n_samples", n_samples)
    block_samples = _check_count("block_samples", block_samples)
    timeline = TimelineSimulator(config, rng, n_detectors, phi_gv)
    blocks = []
    n_wafer = 0
    n_direct = np.zeros(timeline.n_detectors, dtype=np.int64)
    remaining = n_samples
    while remaining > 0:
        step = min(block_samples, remaining)
        power_w, hits = timeline.next_block(step)
        blocks.append(power_w)
        n_wafer += hits.n_wafer_hits
        n_direct += hits.n_direct_hits
        remaining -= step
    return SimulatedTimestream(
        power_w=np.concatenate(blocks, axis=1),
        sample_rate_hz=config.readout.sample_rate_hz,
        phi_gv=timeline.phi_gv,
        n_wafer_hits=n_wafer,
        n_direct_hits=n_direct,
        wafer_rate_hz=timeline.wafer_rate_hz,
        island_rate_hz=timeline.island_rate_hz,
    )


@dataclasses.dataclass(frozen=True)
class TrainingChunks:
    """Output of ``simulate_training_chunks``.

    Attributes:
        chunks (ndarray): (n_chunks, chunk_length) float64 in W for one detector, or
            (n_chunks, n_det, chunk_length) for a group of detectors.
        labels (dict): Label name (``LABEL_NAMES``) to an (n_chunks,) array.
            ``phi_gv`` is float64 in GV. ``n_direct_hits`` and ``n_wafer_hits`` are int64
            counts of hits starting in the chunk, summed over detectors.
            ``max_deposit_kev``, ``max_direct_deposit_kev`` and ``max_wafer_deposit_kev`` are
            float64 in keV, 0 without hits. ``run_id`` and ``chunk_index`` (position in the
            run) are int64, and ``start_time_s`` (float64) is the chunk start in its run.
        sample_rate_hz (float): Sample rate, Hz.
        provenance (dict): MC configuration, seed, run layout and package version
            (JSON-serialisable).
    """

    chunks: np.ndarray
    labels: dict
    sample_rate_hz: float
    provenance: dict


def _run_sizes(n_chunks, n_runs):
    base, extra = divmod(n_chunks, n_runs)
    return [base + (1 if run < extra else 0) for run in range(n_runs)]


def _empty_labels(n_chunks):
    return {
        "phi_gv": np.empty(n_chunks, dtype=np.float64),
        "n_direct_hits": np.empty(n_chunks, dtype=np.int64),
        "n_wafer_hits": np.empty(n_chunks, dtype=np.int64),
        "max_deposit_kev": np.empty(n_chunks, dtype=np.float64),
        "max_direct_deposit_kev": np.empty(n_chunks, dtype=np.float64),
        "max_wafer_deposit_kev": np.empty(n_chunks, dtype=np.float64),
        "run_id": np.empty(n_chunks, dtype=np.int64),
        "chunk_index": np.empty(n_chunks, dtype=np.int64),
        "start_time_s": np.empty(n_chunks, dtype=np.float64),
    }


def _simulate_run(config, run_seed, run_id, n_chunks, chunk_length, n_detectors, progress=None):
    """Simulate one run; return its chunks (n_chunks, n_det, chunk_length) and labels."""
    rng = np.random.default_rng(run_seed)
    phi_range = config.environment.phi_range_gv
    phi_gv = config.phi_gv if phi_range is None else float(rng.uniform(*phi_range))
    timeline = TimelineSimulator(config, rng, n_detectors, phi_gv)
    chunks = np.empty((n_chunks, n_detectors, chunk_length), dtype=np.float64)
    labels = _empty_labels(n_chunks)
    for index in range(n_chunks):
        labels["start_time_s"][index] = timeline.time_s
        chunks[index], hits = timeline.next_block(chunk_length)
        labels["n_direct_hits"][index] = hits.n_direct_hits.sum()
        labels["n_wafer_hits"][index] = hits.n_wafer_hits
        labels["max_direct_deposit_kev"][index] = hits.max_direct_deposit_kev
        labels["max_wafer_deposit_kev"][index] = hits.max_wafer_deposit_kev
        if progress is not None:
            progress(1)
    labels["phi_gv"][:] = timeline.phi_gv
    labels["max_deposit_kev"][:] = np.maximum(
        labels["max_direct_deposit_kev"], labels["max_wafer_deposit_kev"]
    )
    labels["run_id"][:] = run_id
    labels["chunk_index"][:] = np.arange(n_chunks)
    return chunks, labels


def _simulate_run_task(arguments):
    return _simulate_run(*arguments)


def simulate_training_chunks(config, n_chunks, chunk_length=1060, seed=0, n_runs=1,
                             n_detectors=1, progress=None, n_workers=1):
    """Simulate training chunks from independent continuous MC runs.

    Each run is one continuous timeline with its own ``numpy.random.Generator`` seeded by
    child ``run_id`` of ``numpy.random.SeedSequence(seed)``; it is cut into adjacent,
    non-overlapping chunks. Runs get ``n_chunks // n_runs`` chunks each, the first
    ``n_chunks % n_runs`` runs one more. With ``environment.phi_range_gv`` set, each run draws
    its own phi. Chunks of different runs are statistically independent, so training and
    validation sets can be split by ``run_id``. The result does not depend on ``n_workers``.

    Args:
        config (MCConfig): MC configuration.
        n_chunks (int): Total number of chunks.
        chunk_length (int): Samples per chunk.
        seed (int): Root seed (non-negative).
        n_runs (int): Independent runs, at most ``n_chunks``.
        n_detectors (int): Detectors per run. With 1 the chunks are 2-D.
        progress (callable, optional): Called with the number of chunks just finished
            (e.g. ``tqdm.update``): after each chunk with one worker, after each run with more.
        n_workers (int): Processes that simulate runs in parallel.

    Returns:
        TrainingChunks: Chunks, per-chunk labels and provenance.
    """
    if not isinstance(config, MCConfig):
        raise TypeError(f"config must be an MCConfig, got {type(config).__name__}")
    n_chunks = _check_count("n_chunks", n_chunks)
    chunk_length = _check_count("chunk_length", chunk_length)
    seed = _check_count("seed", seed, minimum=0)
    n_runs = _check_count("n_runs", n_runs)
    n_detectors = _check_count("n_detectors", n_detectors)
    n_workers = _check_count("n_workers", n_workers)
    if n_runs > n_chunks:
        raise ValueError(
            f"n_runs ({n_runs}) is larger than n_chunks ({n_chunks}); every run must yield at "
            "least one chunk, so use n_runs <= n_chunks"
        )

    run_seeds = np.random.SeedSequence(seed).spawn(n_runs)
    sizes = _run_sizes(n_chunks, n_runs)
    tasks = [
        (config, run_seed, run_id, size, chunk_length, n_detectors)
        for run_id, (run_seed, size) in enumerate(zip(run_seeds, sizes))
    ]
    results = []
    if n_workers == 1:
        for task in tasks:
            results.append(_simulate_run(*task, progress=progress))
    else:
        with concurrent.futures.ProcessPoolExecutor(max_workers=n_workers) as pool:
            for result in pool.map(_simulate_run_task, tasks):
                results.append(result)
                if progress is not None:
                    progress(result[0].shape[0])

    chunks = np.concatenate([result[0] for result in results])
    labels = {
        name: np.concatenate([result[1][name] for result in results]) for name in LABEL_NAMES
    }
    if n_detectors == 1:
        chunks = chunks[:, 0, :]
    readout = config.readout
    provenance = {
        "generator": "toast_crab.mc",
        "toast_crab_version": _version.__version__,
        "mc_config": config.to_dict(),
        "seed": seed,
        "n_runs": n_runs,
        "n_chunks": n_chunks,
        "chunk_length": chunk_length,
        "n_detectors": n_detectors,
        "sample_rate_hz": readout.sample_rate_hz,
        "unit": "W",
        "quantity": (
            "optical-power-equivalent change dP_opt = -dP_J, baseline removed"
            if readout.sign_convention == "optical"
            else "Joule power change dP_J, baseline removed"
        ),
        "run_phi_gv": [float(result[1]["phi_gv"][0]) for result in results],
        "pre_roll_s": pre_roll_s(config),
        "detector_positions_m": detector_positions_m(n_detectors, config.wafer).tolist(),
    }
    return TrainingChunks(
        chunks=chunks, labels=labels, sample_rate_hz=readout.sample_rate_hz, provenance=provenance
    )
