"""Shared builders for the toast_crab tests: tiny bundles and TOAST satellite data."""

import json
import os
from datetime import datetime, timezone

import numpy as np
from astropy import units as u

SAMPLE_RATE_HZ = 19.1


def write_tiny_bundle(folder, name="tiny", chunk_length=64, latent_dim=8, seed=3,
                      sample_rate_hz=SAMPLE_RATE_HZ, scale_w=1.0e-17):
    """Write a small random-weight generator bundle and return its .keras path.

    The network (Dense, Conv1D, BatchNormalization) has the layer types of the CRAB
    generator, so batching and serialization behave as for the real model.
    """
    import keras
    from keras import layers

    from toast_crab.bundle import CARD_SCHEMA, CARD_SCHEMA_VERSION, save_bundle

    keras.utils.set_random_seed(seed)
    z_in = keras.Input((latent_dim,))
    x = layers.Dense(chunk_length // 4)(z_in)
    x = layers.Reshape((chunk_length // 4, 1))(x)
    x = layers.Conv1DTranspose(4, 5, strides=4, padding="same")(x)
    x = layers.LeakyReLU(0.2)(x)
    x = layers.BatchNormalization()(x)
    x = layers.Conv1D(1, 3, padding="same")(x)
    generator = keras.Model(z_in, x)
    card = {
        "schema": CARD_SCHEMA,
        "schema_version": CARD_SCHEMA_VERSION,
        "name": name,
        "family": "crab_bce",
        "sample_rate_hz": sample_rate_hz,
        "chunk_length": chunk_length,
        "output_unit": "W",
        "transform": {"name": "asinh", "scale_w": scale_w},
        "latent_shape": [latent_dim],
        "conditioning": {},
        "training_data": {"note": "untrained test bundle"},
        "training": {"steps": 0},
        "validation": {},
    }
    path = os.path.join(str(folder), f"{name}.keras")
    save_bundle(generator, card, path)
    return path


# Reach of the tiny sequence model, in latent positions: the kernel-3 convolutions at
# 1x, 2x and 4x the latent rate reach 1 + 1/2 + 1/4 positions, plus one position for
# the rounding of t // stride.
TINY_SEQUENCE_HALO = 3


def write_tiny_seamless_bundle(folder, name="tiny_seq", channels=4, conditioned=False,
                               seed=5, sample_rate_hz=SAMPLE_RATE_HZ, scale_w=1.0e-17,
                               halo=TINY_SEQUENCE_HALO):
    """Write a small random-weight sequence ("seamless") bundle; return its .keras path.

    Fully convolutional: Conv1D at the latent rate, two UpSampling1D + Conv1D stages
    (latent stride 4). With ``conditioned`` a second input (batch, 1) is mapped by a
    Dense layer to one offset per channel and added at every time step.
    """
    import keras
    from keras import layers

    from toast_crab.bundle import CARD_SCHEMA, CARD_SCHEMA_VERSION, save_bundle

    keras.utils.set_random_seed(seed)
    z_in = keras.Input((None, channels), name="latents")
    x = layers.Conv1D(8, 3, padding="same")(z_in)
    inputs = z_in
    if conditioned:
        c_in = keras.Input((1,), name="condition")
        offset = layers.Reshape((1, 8))(layers.Dense(8)(c_in))
        x = layers.Add()([x, offset])
        inputs = [z_in, c_in]
    x = layers.LeakyReLU(0.2)(x)
    x = layers.UpSampling1D(2)(x)
    x = layers.Conv1D(8, 3, padding="same")(x)
    x = layers.LeakyReLU(0.2)(x)
    x = layers.UpSampling1D(2)(x)
    x = layers.Conv1D(1, 3, padding="same")(x)
    x = layers.Reshape((-1,))(x)
    generator = keras.Model(inputs, x)
    conditioning = {}
    if conditioned:
        conditioning = {
            "phi_gv": {
                "unit": "GV", "offset": 0.5, "scale": 0.2, "range": [0.3, 0.75],
                "training_levels": [0.3, 0.75], "held_out_levels": [],
            }
        }
    card = {
        "schema": CARD_SCHEMA,
        "schema_version": CARD_SCHEMA_VERSION,
        "name": name,
        "family": "seamless",
        "sample_rate_hz": sample_rate_hz,
        "chunk_length": 64,
        "output_unit": "W",
        "transform": {"name": "asinh", "scale_w": scale_w},
        "latent_shape": [channels],
        "sequence": {"latent_stride": 4, "halo_latents": int(halo)},
        "conditioning": conditioning,
        "training_data": {"note": "untrained test bundle"},
        "training": {"steps": 0},
        "validation": {},
    }
    path = os.path.join(str(folder), f"{name}.keras")
    save_bundle(generator, card, path)
    return path


def synthetic_spike_chunks(n_runs, chunks_per_run, seed, chunk_length, spike_rate=5e-3,
                           kernel_length=6, continuum_w=1.0e-17):
    """Return a synthetic training set: Gaussian continuum plus rare one-sided spikes.

    Each run is one continuous timeline cut into chunks. Spikes arrive as a Poisson
    process (``spike_rate`` per sample) with Pareto amplitudes above 5 continuum
    sigmas, each followed by an exponential tail of ``kernel_length`` samples.

    Returns:
        (tuple): ``(chunks, run_ids)``: (n_runs * chunks_per_run, chunk_length) float64 W
        and the (n,) int run id of every chunk.
    """
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    kernel = np.exp(-np.arange(kernel_length) / 1.5)
    chunks, run_ids = [], []
    for run in range(n_runs):
        n_samples = chunks_per_run * chunk_length
        timeline = continuum_w * rng.standard_normal(n_samples)
        n_spikes = rng.poisson(spike_rate * n_samples)
        spikes = np.zeros(n_samples)
        np.add.at(
            spikes,
            rng.integers(0, n_samples, n_spikes),
            continuum_w * (5.0 + 20.0 * rng.pareto(1.5, n_spikes)),
        )
        timeline += np.convolve(spikes, kernel)[:n_samples]
        chunks.append(timeline.reshape(chunks_per_run, chunk_length))
        run_ids += [run] * chunks_per_run
    return np.concatenate(chunks), np.array(run_ids)


def edit_card(keras_path, **changes):
    """Rewrite entries of a bundle's card in place."""
    card_path = os.path.splitext(keras_path)[0] + ".json"
    with open(card_path) as handle:
        card = json.load(handle)
    card.update(changes)
    with open(card_path, "w") as handle:
        json.dump(card, handle)
    return card_path


def create_comm(mpicomm, groupsize=0):
    import toast

    return toast.Comm(world=mpicomm, groupsize=groupsize)


def create_satellite_data(comm, n_pix=7, n_obs=2, obs_minutes=4.0,
                          sample_rate_hz=SAMPLE_RATE_HZ, distribute_time=False):
    """Simulate a tiny satellite data set: n_obs observations of 2 * n_pix detectors.

    Detectors carry bandcenter and bandwidth, so K_CMB calibration works. Nothing is
    flagged. The default (4 min, 19.1 Hz) gives 4584 samples, several 1060-sample
    chunks and a partial one.
    """
    import toast
    import toast.ops
    from toast.instrument import SpaceSite, Telescope
    from toast.instrument_sim import fake_hexagon_focalplane
    from toast.schedule_sim_satellite import create_satellite_schedule

    focalplane = fake_hexagon_focalplane(
        n_pix=n_pix,
        sample_rate=sample_rate_hz * u.Hz,
        width=5 * u.deg,
        psd_net=50e-6 * u.K * np.sqrt(1 * u.s),
        psd_fmin=1e-5 * u.Hz,
        psd_fknee=0.05 * u.Hz,
    )
    telescope = Telescope("crab_test", focalplane=focalplane, site=SpaceSite("L2"))
    schedule = create_satellite_schedule(
        prefix="obs_",
        mission_start=datetime(2023, 2, 23, tzinfo=timezone.utc),
        observation_time=obs_minutes * u.minute,
        gap_time=0 * u.s,
        num_observations=n_obs,
        prec_period=10 * u.minute,
        spin_period=1 * u.minute,
    )
    data = toast.Data(comm=comm)
    toast.ops.SimSatellite(
        name="sim_satellite",
        telescope=telescope,
        schedule=schedule,
        hwp_angle=None,
        spin_angle=50 * u.deg,
        prec_angle=45 * u.deg,
        detset_key="pixel",
        distribute_time=distribute_time,
    ).apply(data)
    return data


def gather_detdata(data, key, comm):
    """Return {(obs name, det): full timestream} on every rank, gathered over comm."""
    local = {}
    for ob in data.obs:
        if key not in ob.detdata:
            continue
        for det in ob.detdata[key].detectors:
            local[(ob.name, str(det), ob.local_index_offset)] = np.array(ob.detdata[key][det])
    pieces = [local] if comm is None else comm.allgather(local)
    # Pieces are keyed by sample offset, so copies of the same piece held by several
    # ranks (for example when each rank simulated everything alone) count once.
    merged = {}
    for piece in pieces:
        for (obs_name, det, offset), values in piece.items():
            merged.setdefault((obs_name, det), {})[offset] = values
    return {
        name: np.concatenate([parts[offset] for offset in sorted(parts)])
        for name, parts in merged.items()
    }
