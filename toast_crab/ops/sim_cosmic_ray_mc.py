"""TOAST operator that adds reference-MC cosmic-ray timestreams to detector data."""

import dataclasses
import math

import numpy as np
import toast.rng
import traitlets
from astropy import units as u
from toast.instrument_coords import quat_to_xieta
from toast.observation import default_values as defaults
from toast.ops.operator import Operator
from toast.timing import Timer, function_timer
from toast.traits import Float, Int, Quantity, Unicode, Unit, trait_docs
from toast.utils import Logger, name_UID

from ..calibration import watts_to_units_factors
from ..generation import stream_keys
from ..mc.blocks import BlockRenderer
from ..mc.config import MCConfig
from ..mc.hits import HIT_UNIFORMS, HitSampler, Hits, poisson_counts
from ._modulation import PHI_DATE_OBSERVATION, check_phi, check_phi_date, observation_phi_gv

__all__ = ["SimCosmicRayMC"]

# Component id of SimCosmicRayMC streams (ASCII "MC" = 0x4D43), distinct from InjectCRAB's.
DEFAULT_COMPONENT = 0x4D43

# Counter layout of toast.rng: counter1 = component << 40 | kind << 38 | index.
# Kind 0 is the stream of hit counts of all blocks of a target: index 0 for a wafer and 1
# for an island, counter2 = block index + _BLOCK_OFFSET. Kinds 1 (wafer) and 2 (island)
# are the per-hit uniforms of one block: index = block + _BLOCK_OFFSET, counter2 = element.
# The offset keeps the lead-in block before the session start (index -1) non-negative.
_KIND_COUNTS = 0
_KIND_WAFER_HITS = 1
_KIND_ISLAND_HITS = 2
_BLOCK_OFFSET = 2**37
_MAX_COMPONENT = 2**24


def _rng_uniforms(keys, counter, n_values):
    """Return ``n_values`` float64 uniforms in [0, 1) of one toast.rng stream (a copy)."""
    if n_values == 0:
        return np.zeros(0, dtype=np.float64)
    draws = toast.rng.random(n_values, key=keys, counter=counter, sampler="uniform_01")
    return np.array(draws.array(), dtype=np.float64)


class _HitStream:
    """Hits of one target (a wafer or one TES island), block by block, from toast.rng.

    Args:
        keys (tuple): toast.rng key pair of the target.
        target (str): "wafer" or "island".
        sampler (HitSampler): Physics of the hits.
        block_s (float): Block duration, s.
        first_block, last_block (int): Range of block indices that will be requested.
        component (int): RNG component id.
    """

    def __init__(self, keys, target, sampler, block_s, first_block, last_block, component):
        self.keys = keys
        self.target = target
        self.sampler = sampler
        self.block_s = block_s
        self.first_block = first_block
        self.base = int(component) << 40
        if target == "wafer":
            expected = sampler.wafer_rate_hz * block_s
            count_index = 0
            self.kind = _KIND_WAFER_HITS
        else:
            expected = sampler.island_rate_hz * block_s
            count_index = 1
            self.kind = _KIND_ISLAND_HITS
        counter = (self.base | (_KIND_COUNTS << 38) | count_index, first_block + _BLOCK_OFFSET)
        uniforms = _rng_uniforms(keys, counter, last_block - first_block + 1)
        self.counts = poisson_counts(uniforms, expected)
        self._cache = {}

    def block(self, index):
        """Return the hits of block ``index``, times from the block start."""
        if index not in self._cache:
            n_hits = int(self.counts[index - self.first_block])
            counter = (self.base | (self.kind << 38) | (index + _BLOCK_OFFSET), 0)
            uniforms = _rng_uniforms(self.keys, counter, n_hits * HIT_UNIFORMS)
            self._cache[index] = self.sampler.hits(self.target, uniforms, self.block_s)
        return self._cache[index]

    def window(self, first_block, last_block, start_s):
        """Return the hits of blocks ``first_block..last_block`` that start after ``start_s``.

        ``start_s`` is measured from the start of ``first_block``; returned times are
        measured from ``start_s``. Blocks before ``first_block`` leave the cache.
        """
        for index in [k for k in self._cache if k < first_block]:
            del self._cache[index]
        parts = []
        for index in range(first_block, last_block + 1):
            hits = self.block(index).shifted((index - first_block) * self.block_s - start_s)
            parts.append(hits.select(hits.time_s >= 0.0))
        return Hits.concatenate(parts)


@trait_docs
class SimCosmicRayMC(Operator):
    """Add cosmic-ray timestreams simulated by the reference MC to detector data.

    For every observation the operator runs the reference Monte-Carlo of
    ``toast_crab.mc``: galactic cosmic rays at L2 with force-field solar modulation,
    hits on the silicon wafer and on each TES island, energy deposits, the linear TES
    response, the anti-alias filter and the decimation to the detector sample rate. It
    converts the result from watts of absorbed power to the units of ``det_data`` and
    adds it.

    Randomness. Every random number comes from TOAST's counter-based RNG. The keys are
    the realization, the telescope and session uids, the component id and the target.
    The target of wafer hits is the wafer uid (a hash of its name), so all detectors of
    the wafer share them. The target of island hits is the detector uid. Hits are drawn
    per absolute time block of ``block_length`` samples on a grid anchored at the
    session start. Each block is rendered from zero filter states after a lead-in that
    covers pulse tails and the filter settling. Each process renders every block that
    overlaps its samples, so the output is bit-identical for any MPI process grid,
    detector or time distribution.

    Geometry. Detectors belong to the wafer named in the focalplane column
    ``wafer_key``; without that column all detectors of a telescope share one wafer.
    Detector positions on the wafer come from the focalplane quaternions times
    ``plate_scale``; when that is None the detectors of each wafer are scaled to span
    the wafer side less one pixel pitch. The wafer itself is the square of
    ``WaferConfig`` for every wafer.

    Modulation. ``phi`` sets the force-field potential of every observation. When it is
    None, phi comes from the solar-cycle model of the MC configuration at the date
    given by ``phi_date``: "observation" takes the session start of each observation
    (its first sample time when the session has no start), an ISO 8601 date applies to
    every observation.

    Units: power units (W and multiples) get the MC output directly. Temperature units
    are taken as CMB thermodynamic temperature: the output is divided by
    ``calibration`` or, when that is unset, by dP/dT_CMB of each detector's top-hat
    band (focalplane columns ``bandcenter`` and ``bandwidth``) times
    ``optical_efficiency``.

    Every check (configuration, sample rates, units, calibration inputs, flag keys,
    detector positions) runs on all observations before any data are changed, so a
    rejected configuration leaves ``det_data`` as it was.

    Limitations: the linear TES model (no saturation), one wafer geometry for all
    wafers, no solar energetic particle events, and no detector noise (use
    ``toast.ops.SimNoise``; ``nep_w_per_rthz`` of the configuration must be 0).

    """

    # Class traits

    API = Int(0, help="Internal interface version for this operator")

    mc_config = Unicode(
        None,
        allow_none=True,
        help="Path of a TOML MC configuration in the crab-mc format; None uses the "
        "defaults of toast_crab.mc",
    )

    det_data = Unicode(
        defaults.det_data, help="Observation detdata key to add cosmic-ray timestreams to"
    )

    det_data_units = Unit(
        defaults.det_data_units, help="Output units if creating detector data"
    )

    realization = Int(0, help="The cosmic-ray realization index, in [0, 2**31)")

    component = Int(
        DEFAULT_COMPONENT,
        help="RNG component id, in [0, 2**24); keeps these streams apart from others",
    )

    phi = Quantity(
        None,
        allow_none=True,
        help="Force-field modulation potential (e.g. 0.35 GV) on the Corti et al. 2019 "
        "LIS scale; None takes phi from the solar-cycle model at phi_date",
    )

    phi_date = Unicode(
        PHI_DATE_OBSERVATION,
        help="Date of the solar-cycle phi when phi is None: 'observation' (session start "
        "of each observation) or an ISO 8601 date such as '2032-06-01'",
    )

    internal_rate = Quantity(
        None,
        allow_none=True,
        help="Rate of the internal simulation grid; None uses internal_rate_hz of the MC "
        "configuration. The grid uses the smallest integer multiple of the detector rate "
        "at or above it",
    )

    block_length = Int(
        1060,
        help="Samples per time block of independent hit draws; the output bits depend on it",
    )

    wafer_key = Unicode(
        "wafer",
        help="Focalplane column naming each detector's wafer; without it all detectors "
        "of a telescope share one wafer",
    )

    plate_scale = Quantity(
        None,
        allow_none=True,
        help="Distance on the wafer per angle in the focal plane (e.g. 20 mm / deg); None "
        "scales each wafer's detectors to span the wafer side less one pixel pitch",
    )

    calibration = Quantity(
        None,
        allow_none=True,
        help="dP/dT_CMB used for every detector (W / K); None computes it per detector "
        "from the focalplane bandcenter and bandwidth",
    )

    optical_efficiency = Float(
        1.0,
        help="Optical efficiency in (0, 1] used with the focalplane band when "
        "calibration is None",
    )

    det_mask = Int(
        defaults.det_mask_nonscience,
        help="Bit mask value for per-detector flagging; flagged detectors get nothing",
    )

    det_flags = Unicode(
        defaults.det_flags,
        allow_none=True,
        help="Observation detdata key for flags to use",
    )

    det_flag_mask = Int(
        0,
        help="Bit mask value for detector sample flagging; flagged samples get nothing "
        "(0 injects into every sample)",
    )

    @traitlets.validate("realization")
    def _check_realization(self, proposal):
        value = proposal["value"]
        if not 0 <= value < 2**31:
            raise traitlets.TraitError(f"realization must be in [0, 2**31). Got {value}.")
        return value

    @traitlets.validate("component")
    def _check_component(self, proposal):
        value = proposal["value"]
        if not 0 <= value < _MAX_COMPONENT:
            raise traitlets.TraitError(f"component must be in [0, 2**24). Got {value}.")
        return value

    @traitlets.validate("phi")
    def _check_phi(self, proposal):
        return check_phi(proposal["value"])

    @traitlets.validate("phi_date")
    def _check_phi_date(self, proposal):
        return check_phi_date(proposal["value"])

    @traitlets.validate("internal_rate")
    def _check_internal_rate(self, proposal):
        value = proposal["value"]
        if value is None:
            return value
        if not value.unit.is_equivalent(u.Hz) or not value.to_value(u.Hz) > 0:
            raise traitlets.TraitError(
                f"internal_rate must be a positive frequency such as Quantity('1222.4 Hz'). "
                f"Got {value}."
            )
        return value

    @traitlets.validate("block_length")
    def _check_block_length(self, proposal):
        value = proposal["value"]
        if value < 1:
            raise traitlets.TraitError(f"block_length must be at least 1 sample. Got {value}.")
        return value

    @traitlets.validate("plate_scale")
    def _check_plate_scale(self, proposal):
        value = proposal["value"]
        if value is None:
            return value
        if not value.unit.is_equivalent(u.m / u.rad) or not value.value > 0:
            raise traitlets.TraitError(
                f"plate_scale must be a positive length per angle such as "
                f"Quantity('20 mm / deg'). Got {value}."
            )
        return value

    @traitlets.validate("calibration")
    def _check_calibration(self, proposal):
        value = proposal["value"]
        if value is None:
            return value
        if not value.unit.is_equivalent(u.W / u.K):
            raise traitlets.TraitError(
                f"calibration must be a power per temperature such as "
                f"Quantity('3.6e-13 W / K'). Got {value}."
            )
        if not (np.isfinite(value.value) and value.value > 0):
            raise traitlets.TraitError(f"calibration must be positive. Got {value}.")
        return value

    @traitlets.validate("optical_efficiency")
    def _check_optical_efficiency(self, proposal):
        value = proposal["value"]
        if not 0.0 < value <= 1.0:
            raise traitlets.TraitError(f"optical_efficiency must be in (0, 1]. Got {value}.")
        return value

    @traitlets.validate("det_mask", "det_flag_mask")
    def _check_masks(self, proposal):
        value = proposal["value"]
        if value < 0:
            raise traitlets.TraitError(f"Flag masks must be non-negative. Got {value}.")
        return value

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._samplers = {}

    @function_timer
    def _exec(self, data, detectors=None, **kwargs):
        log = Logger.get()
        timer = Timer()
        timer.start()

        # Check everything before touching any data.
        config = self._load_config()
        plans = [self._plan_observation(ob, config, detectors) for ob in data.obs]

        n_samples = 0
        for ob, plan in zip(data.obs, plans):
            ob.detdata.ensure(
                self.det_data, detectors=plan["all_dets"], create_units=self.det_data_units
            )
            for wafer in plan["wafers"]:
                self._inject_wafer(ob, plan, wafer)
            n_samples += len(plan["dets"]) * ob.n_local_samples
            log.debug(
                f"SimCosmicRayMC: observation {ob.name!r}, phi = {plan['phi_gv']:.4g} GV, "
                f"{len(plan['dets'])} local detectors on {len(plan['wafers'])} wafers"
            )

        comm = data.comm.comm_world
        if comm is not None:
            n_samples = comm.allreduce(n_samples)
        log.info_rank(
            f"SimCosmicRayMC added reference-MC cosmic rays to {n_samples} detector "
            "samples in",
            comm=comm,
            timer=timer,
        )

    def _load_config(self):
        """Read and check the MC configuration."""
        config = MCConfig() if self.mc_config is None else MCConfig.from_toml(self.mc_config)
        source = "the default MC configuration" if self.mc_config is None else repr(self.mc_config)
        if config.readout.nep_w_per_rthz != 0.0:
            raise ValueError(
                f"readout.nep_w_per_rthz is {config.readout.nep_w_per_rthz} in {source}; "
                "SimCosmicRayMC adds cosmic rays only. Set it to 0 and simulate detector "
                "noise with toast.ops.SimNoise."
            )
        if config.environment.phi_range_gv is not None:
            raise ValueError(
                f"environment.phi_range_gv is set in {source}; it draws phi per run for "
                "training sets. Remove it and set SimCosmicRayMC.phi or phi_date."
            )
        return config

    def _plan_observation(self, ob, config, detectors):
        """Validate one observation and return what to inject where."""
        focalplane = ob.telescope.focalplane
        rate_hz = focalplane.sample_rate.to_value(u.Hz)
        phi_gv = self._observation_phi_gv(ob, config)
        observation_config = self._config_for_rate(ob, config, rate_hz)

        all_dets = ob.select_local_detectors(detectors)
        dets = ob.select_local_detectors(detectors, flagmask=self.det_mask)
        if self.det_data in ob.detdata:
            units = ob.detdata[self.det_data].units
        else:
            units = self.det_data_units
        scale = self._unit_scale(ob, focalplane, dets, units)

        if self.det_flag_mask != 0 and len(dets) > 0:
            if self.det_flags is None or self.det_flags not in ob.detdata:
                raise KeyError(
                    f"det_flag_mask is {self.det_flag_mask} but observation {ob.name!r} "
                    f"has no detector flags {self.det_flags!r}. Set det_flags to an "
                    "existing flag key, or det_flag_mask to 0."
                )

        return {
            "all_dets": all_dets,
            "dets": dets,
            "scale": scale,
            "phi_gv": phi_gv,
            "config": observation_config,
            "rate_hz": rate_hz,
            "first_sample": _session_offset(ob, rate_hz) + ob.local_index_offset,
            "wafers": self._wafer_groups(ob, observation_config, dets),
        }

    def _observation_phi_gv(self, ob, config):
        """Return phi of an observation, GV."""
        phi_gv, _ = observation_phi_gv(ob, self.phi, self.phi_date, config.solar_cycle)
        return phi_gv

    def _config_for_rate(self, ob, config, rate_hz):
        """Return the MC configuration with the readout at the detector rate."""
        if self.internal_rate is None:
            internal_hz = config.readout.internal_rate_hz
        else:
            internal_hz = float(self.internal_rate.to_value(u.Hz))
        if not internal_hz > rate_hz:
            raise ValueError(
                f"The internal MC rate {internal_hz} Hz is not above the sample rate "
                f"{rate_hz} Hz of observation {ob.name!r}. Set SimCosmicRayMC.internal_rate "
                f"(or internal_rate_hz of the MC configuration) above it; at least "
                f"{4.0 / config.detector.tau_eff_s:g} Hz resolves the TES time constant."
            )
        factor = max(2, math.ceil(internal_hz / rate_hz - 1.0e-9))
        readout = dataclasses.replace(
            config.readout, sample_rate_hz=rate_hz, internal_rate_hz=factor * rate_hz
        )
        return dataclasses.replace(config, readout=readout)

    def _unit_scale(self, ob, focalplane, dets, units):
        """Return per-detector factors from W to ``units``."""
        return watts_to_units_factors(
            focalplane,
            dets,
            units,
            calibration=self.calibration,
            optical_efficiency=self.optical_efficiency,
            operator="SimCosmicRayMC",
            target=f"{self.det_data!r} of observation {ob.name!r}",
        )

    def _wafer_groups(self, ob, config, dets):
        """Group the selected local detectors by wafer, with their positions on the wafer."""
        focalplane = ob.telescope.focalplane
        table = focalplane.detector_data
        names = [str(name) for name in table["name"]]
        if self.wafer_key in table.colnames:
            wafer_of = {name: str(w) for name, w in zip(names, table[self.wafer_key])}
        else:
            wafer_of = {name: str(ob.telescope.name) for name in names}
        xi, eta, _ = quat_to_xieta(np.asarray(table["quat"], dtype=np.float64))
        angles_deg = np.degrees(np.column_stack([xi, eta]))
        row = {name: index for index, name in enumerate(names)}

        groups = []
        for wafer in sorted({wafer_of[str(det)] for det in dets}):
            members = [index for index, name in enumerate(names) if wafer_of[name] == wafer]
            positions = self._wafer_positions(ob, wafer, angles_deg[members], config.wafer)
            local = [det for det in dets if wafer_of[str(det)] == wafer]
            local_rows = [members.index(row[str(det)]) for det in local]
            groups.append(
                {"name": wafer, "dets": local, "positions_m": positions[local_rows]}
            )
        return groups

    def _wafer_positions(self, ob, wafer, angles_deg, wafer_config):
        """Map focal-plane angles of all detectors of a wafer to positions on it, m."""
        # NOTE: every wafer is the square of WaferConfig, also where the real wafer is a
        # hexagon (LiteBIRD MFT and HFT), so edge detectors see a slightly wrong near field.
        low = angles_deg.min(axis=0)
        high = angles_deg.max(axis=0)
        centred = angles_deg - 0.5 * (low + high)
        extent_deg = float(np.max(high - low))
        side_m = wafer_config.wafer_side_m
        if self.plate_scale is None:
            usable_m = max(side_m - wafer_config.pixel_pitch_m, 0.0)
            scale_m_per_deg = usable_m / extent_deg if extent_deg > 0.0 else 0.0
        else:
            scale_m_per_deg = float(self.plate_scale.to_value(u.m / u.deg))
            span_m = extent_deg * scale_m_per_deg
            if span_m > side_m:
                raise ValueError(
                    f"Detectors of wafer {wafer!r} in observation {ob.name!r} span "
                    f"{extent_deg:.4g} deg, i.e. {span_m:.4g} m at plate_scale "
                    f"{self.plate_scale}, more than the wafer side {side_m} m. Lower "
                    "plate_scale, or set it to None to fit the detectors to the wafer."
                )
        return centred * scale_m_per_deg

    def _sampler(self, config, phi_gv):
        """Return the HitSampler of a configuration and phi (cached per process)."""
        key = (config.environment, config.detector, config.wafer, phi_gv)
        if key not in self._samplers:
            self._samplers[key] = HitSampler(config, phi_gv)
        return self._samplers[key]

    def _inject_wafer(self, ob, plan, wafer):
        """Render and add the cosmic rays of one wafer's selected local detectors."""
        if len(wafer["dets"]) == 0 or ob.n_local_samples == 0:
            return
        config = plan["config"]
        rate_hz = plan["rate_hz"]
        sampler = self._sampler(config, plan["phi_gv"])
        renderer = BlockRenderer(config, wafer["positions_m"])
        block = self.block_length
        lead = renderer.pre_roll_samples
        block_s = block / rate_hz
        first = plan["first_sample"]
        last = first + ob.n_local_samples - 1
        first_block, last_block = first // block, last // block
        first_needed = (first_block * block - lead) // block

        telescope_uid = ob.telescope.uid
        session_uid = ob.session.uid
        focalplane = ob.telescope.focalplane
        span = (first_needed, last_block, self.component)
        wafer_keys = stream_keys(self.realization, telescope_uid, session_uid, name_UID(wafer["name"]))
        wafer_stream = _HitStream(wafer_keys, "wafer", sampler, block_s, *span)
        island_streams = [
            _HitStream(
                stream_keys(self.realization, telescope_uid, session_uid, focalplane[det]["uid"]),
                "island", sampler, block_s, *span,
            )
            for det in wafer["dets"]
        ]

        target = ob.detdata[self.det_data]
        flags = ob.detdata[self.det_flags] if self.det_flag_mask != 0 else None
        for index in range(first_block, last_block + 1):
            window_start = index * block - lead
            window_block = window_start // block
            start_s = (window_start - window_block * block) / rate_hz
            wafer_hits = wafer_stream.window(window_block, index, start_s)
            island_parts = [s.window(window_block, index, start_s) for s in island_streams]
            channels = np.repeat(np.arange(len(island_parts)), [len(p) for p in island_parts])
            power_w = renderer.render(
                lead + block, lead, wafer_hits, Hits.concatenate(island_parts), channels
            )

            # Overlap of this block with the local samples.
            lo = max(index * block, first)
            hi = min((index + 1) * block, last + 1)
            local = slice(lo - first, hi - first)
            rendered = slice(lo - index * block, hi - index * block)
            for row, det in enumerate(wafer["dets"]):
                values = power_w[row, rendered] * plan["scale"][det]
                if flags is None:
                    target[det][local] += values
                else:
                    good = (flags[det][local] & self.det_flag_mask) == 0
                    target[det][local][good] += values[good]

    def _finalize(self, data, **kwargs):
        return

    def _requires(self):
        req = {
            "shared": [defaults.times],
            "detdata": [self.det_data],
        }
        if self.det_flag_mask != 0 and self.det_flags is not None:
            req["detdata"].append(self.det_flags)
        return req

    def _provides(self):
        return {"detdata": [self.det_data]}


def _session_offset(ob, rate_hz):
    """Return the session-grid index of the observation's first sample."""
    start = getattr(ob.session, "start", None)
    if start is None or ob.n_local_samples == 0:
        return 0
    times = ob.shared[defaults.times].data
    first = times[0] - ob.local_index_offset / rate_hz
    # NOTE: exact when samples lie on the session's sample grid, as in SimSatellite.
    return max(0, int(round((first - start.timestamp()) * rate_hz)))
