"""TOAST operator that adds generator-made cosmic-ray timestreams to detector data."""

import numpy as np
import traitlets
from astropy import units as u
from toast.observation import default_values as defaults
from toast.ops.operator import Operator
from toast.timing import Timer, function_timer
from toast.traits import Bool, Float, Int, Quantity, Unicode, Unit, trait_docs
from toast.utils import Logger, name_UID

from ..bundle import default_bundle_path, load_bundle, network_condition, read_card
from ..calibration import watts_to_units_factors
from ..devices import DEVICE_POLICIES, MISSING_GPU_ACTIONS, configure_devices
from ..generation import DEFAULT_COMPONENT, StreamRequest, make_generator, stream_keys
from ._modulation import PHI_DATE_OBSERVATION, check_phi, check_phi_date, observation_phi_gv

__all__ = ["InjectCRAB"]

# Relative difference allowed between the detector and bundle sample rates. The
# nominal rates of a focalplane and a card are the same number when they match.
_RATE_RTOL = 1.0e-6

_STREAM_MODES = ("detector", "wafer")


@trait_docs
class InjectCRAB(Operator):
    """Add cosmic-ray timestreams drawn from a trained generator to detector data.

    The operator loads a model bundle (a Keras generator and its JSON card) once. For
    every observation and every selected local detector it draws the latent vector of
    each chunk from TOAST's counter-based RNG. The keys are the realization, the
    telescope, session and detector uids, the component id and the absolute chunk
    index. The generator runs in fixed-size batches, and its chunks are converted
    from watts of absorbed power to the units of ``det_data`` and added. The result
    is bit-identical for any MPI process grid and any detector or time distribution.

    Chunks sit on a grid anchored at the first sample of the observation's session,
    so time-distributed data and observations that start inside a session are
    covered without shifts. With a chunk model consecutive chunks are independent
    draws, so the timestream has a seam every ``chunk_length`` samples.

    Units: power units (W and multiples) get the generator output directly.
    Temperature units are taken as CMB thermodynamic temperature (TOAST's ``K``):
    the output is divided by ``calibration`` or, when that is unset, by dP/dT_CMB of
    each detector's top-hat band (focalplane columns ``bandcenter`` and
    ``bandwidth``) times ``optical_efficiency``.

    Every check (bundle, sample rates, units, calibration inputs, flag keys) runs on
    all observations before any data are changed, so a rejected configuration leaves
    ``det_data`` as it was.

    Devices: with ``device="auto"`` (the default) each process runs the generator
    on the GPU of its node-local rank when TensorFlow finds GPUs, and on the CPU
    otherwise. TensorFlow's devices and threads are set when the operator first
    runs, so it must run before any other TensorFlow code in the process.

    Wafer correlation: in the reference MC, detectors on one wafer share the wafer
    heating term (correlation 0.65-0.99), which dominates the CR variance and cancels
    in polarization. A single-detector generator cannot reproduce that. With
    ``streams="detector"`` (the default) every detector draws its own stream, which
    overestimates the CR polarization residual (Q/U map RMS about 6 times the MC's in
    a 4-detector test). With ``streams="wafer"`` all detectors of a wafer (focalplane
    column ``wafer_key``, or the whole telescope without it, as in SimCosmicRayMC) add
    the same stream, which underestimates it and makes direct-hit glitches coincident.
    Run both to bracket the effect.

    Sequence (seamless) models: for a bundle of a sequence family the timeline is
    built from blocks of ``block_latents`` latent positions anchored at the session
    start. Neighbouring blocks share the latents of their overlap and keep only the
    samples beyond the model's halo. The timestream therefore has no seams and equals
    one pass of the generator over the whole observation (bit for bit on the CPU in
    the tests; up to float32 rounding elsewhere).

    Flux conditioning: a bundle conditioned on the solar modulation potential gets
    ``phi`` when set, else phi(t) of the solar-cycle model (``mc_config``'s
    ``[solar_cycle]`` table, or its defaults) at ``phi_date``: the session start of
    each observation, or a fixed ISO 8601 date. Values outside the range the model
    was trained on are rejected. Unconditioned bundles reject ``phi``.

    Limitations: the bundle's sample rate must equal the focalplane's. An
    unexpected failure inside TensorFlow after the checks can leave earlier
    observations already injected. Bit-identical output for every process grid is
    tested on the CPU; GPU outputs differ from CPU outputs by float32 rounding
    (float16 with ``mixed_precision``), and the batch size may change GPU bits.

    """

    # Class traits

    API = Int(0, help="Internal interface version for this operator")

    model = Unicode(
        None,
        allow_none=True,
        help="Path of the model bundle ('.keras' file or its '.json' card); None uses "
        "the bundle shipped with toast_crab",
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

    batch_size = Int(
        256, help="Chunks (or blocks of a sequence model) per generator call; the output "
        "bits depend on it"
    )

    block_latents = Int(
        256,
        help="Latent positions per block of a sequence (seamless) model; at least the "
        "model's halo. The output bits depend on it",
    )

    phi = Quantity(
        None,
        allow_none=True,
        help="Solar modulation potential (e.g. 0.45 GV) for flux-conditioned models; None "
        "takes phi(t) of the solar-cycle model at phi_date",
    )

    phi_date = Unicode(
        PHI_DATE_OBSERVATION,
        help="Date of the solar-cycle phi when phi is None: 'observation' (session start "
        "of each observation) or an ISO 8601 date such as '2032-06-01'",
    )

    mc_config = Unicode(
        None,
        allow_none=True,
        help="MC TOML file whose [solar_cycle] table defines phi(t); None uses the "
        "toast_crab defaults",
    )

    streams = Unicode(
        "detector",
        help="Which detectors share a CR stream: 'detector' (each its own) or 'wafer' "
        "(all detectors of a wafer add the same stream)",
    )

    wafer_key = Unicode(
        "wafer",
        help="Focalplane column naming each detector's wafer for streams='wafer'; without "
        "it all detectors of a telescope share one wafer",
    )

    tf_threads = Int(
        0,
        help="TensorFlow intra-op threads per process; 0 uses OMP_NUM_THREADS (1 if unset)",
    )

    device = Unicode(
        "auto",
        help="Device of the generator: 'auto' (the GPU of the node-local rank if "
        "TensorFlow finds one, else the CPU), 'cpu' or 'gpu'",
    )

    on_missing_gpu = Unicode(
        "error",
        help="What device='gpu' does without a visible GPU: 'error' raises, "
        "'fallback' logs a warning and runs on the CPU",
    )

    mixed_precision = Bool(
        False,
        help="Run the generator on GPU under the Keras 'mixed_float16' policy with a "
        "float32 output layer; ignored with a warning on the CPU",
    )

    gpu_memory_growth = Bool(
        True,
        help="Let TensorFlow grow GPU memory on demand instead of reserving the whole GPU",
    )

    @traitlets.validate("realization")
    def _check_realization(self, proposal):
        value = proposal["value"]
        if not 0 <= value < 2**31:
            raise traitlets.TraitError(
                f"realization must be in [0, 2**31). Got {value}."
            )
        return value

    @traitlets.validate("component")
    def _check_component(self, proposal):
        value = proposal["value"]
        if not 0 <= value < 2**24:
            raise traitlets.TraitError(f"component must be in [0, 2**24). Got {value}.")
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
            raise traitlets.TraitError(
                f"optical_efficiency must be in (0, 1]. Got {value}."
            )
        return value

    @traitlets.validate("batch_size")
    def _check_batch_size(self, proposal):
        value = proposal["value"]
        if value < 1:
            raise traitlets.TraitError(f"batch_size must be at least 1. Got {value}.")
        return value

    @traitlets.validate("block_latents")
    def _check_block_latents(self, proposal):
        value = proposal["value"]
        if value < 1:
            raise traitlets.TraitError(f"block_latents must be at least 1. Got {value}.")
        return value

    @traitlets.validate("phi")
    def _check_phi(self, proposal):
        return check_phi(proposal["value"])

    @traitlets.validate("phi_date")
    def _check_phi_date(self, proposal):
        return check_phi_date(proposal["value"])

    @traitlets.validate("device")
    def _check_device(self, proposal):
        value = proposal["value"]
        if value not in DEVICE_POLICIES:
            raise traitlets.TraitError(
                f"device must be one of {list(DEVICE_POLICIES)}. Got {value!r}."
            )
        return value

    @traitlets.validate("on_missing_gpu")
    def _check_on_missing_gpu(self, proposal):
        value = proposal["value"]
        if value not in MISSING_GPU_ACTIONS:
            raise traitlets.TraitError(
                f"on_missing_gpu must be one of {list(MISSING_GPU_ACTIONS)}. Got {value!r}."
            )
        return value

    @traitlets.validate("streams")
    def _check_streams(self, proposal):
        value = proposal["value"]
        if value not in _STREAM_MODES:
            raise traitlets.TraitError(
                f"streams must be one of {list(_STREAM_MODES)}. Got {value!r}."
            )
        return value

    @traitlets.validate("det_mask", "det_flag_mask")
    def _check_masks(self, proposal):
        value = proposal["value"]
        if value < 0:
            raise traitlets.TraitError(f"Flag masks must be non-negative. Got {value}.")
        return value

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._bundle = None
        self._bundle_path = None
        self._generator = None

    def _model_path(self):
        return default_bundle_path() if self.model is None else self.model

    def _load(self, comm):
        """Set up the device, then load the bundle and build the generator once.

        The bundle is reloaded if the path changed, the generator rebuilt if its
        batch size, device or precision changed.
        """
        log = Logger.get()
        plan = configure_devices(
            self.device,
            self.on_missing_gpu,
            comm=comm,
            n_threads=self.tf_threads,
            memory_growth=self.gpu_memory_growth,
        )
        mixed = self.mixed_precision and plan.kind == "gpu"
        if self.mixed_precision and not mixed:
            log.warning(
                "InjectCRAB: mixed_precision applies to GPU inference only; the generator "
                "runs in float32 on the CPU. Set mixed_precision=False to silence this."
            )

        path = self._model_path()
        if self._bundle is None or self._bundle_path != path:
            self._bundle = load_bundle(path)
            self._bundle_path = path
            self._generator = None
        generator = self._generator
        if (
            generator is None
            or generator.batch_size != self.batch_size
            or getattr(generator, "block_latents", self.block_latents) != self.block_latents
            or generator.device != plan.device
            or generator.mixed_precision != mixed
        ):
            self._generator = make_generator(
                self._bundle,
                batch_size=self.batch_size,
                block_latents=self.block_latents,
                component=self.component,
                device=plan.device,
                mixed_precision=mixed,
            )
        self._generator.component = self.component
        return self._bundle, self._generator

    @function_timer
    def _exec(self, data, detectors=None, **kwargs):
        log = Logger.get()
        timer = Timer()
        timer.start()

        # Check everything before touching any data.
        card = read_card(self._model_path())
        self._check_model_options(card)
        solar_cycle = self._solar_cycle() if card["conditioning"] else None
        plans = [self._plan_observation(ob, card, detectors, solar_cycle) for ob in data.obs]
        _, generator = self._load(data.comm)
        for ob, plan in zip(data.obs, plans):
            if plan["phi_gv"] is not None:
                log.debug_rank(
                    f"InjectCRAB: observation {ob.name!r} uses phi = {plan['phi_gv']:.4g} GV",
                    comm=ob.comm.comm_group,
                )

        n_dets = 0
        n_samples = 0
        for ob, plan in zip(data.obs, plans):
            ob.detdata.ensure(
                self.det_data, detectors=plan["all_dets"], create_units=self.det_data_units
            )
            if len(plan["dets"]) == 0:
                continue
            self._inject_observation(ob, plan, generator)
            n_dets += len(plan["dets"])
            n_samples += len(plan["dets"]) * ob.n_local_samples

        comm = data.comm.comm_world
        if comm is not None:
            n_samples = comm.allreduce(n_samples)
        log.info_rank(
            f"InjectCRAB added cosmic rays from {card['name']!r} to {n_samples} "
            f"detector samples in",
            comm=comm,
            timer=timer,
        )

    def _check_model_options(self, card):
        """Reject options that the bundle cannot use."""
        if not card["conditioning"] and self.phi is not None:
            raise ValueError(
                f"InjectCRAB.phi is {self.phi}, but model {card['name']!r} is not conditioned "
                "on the cosmic-ray flux. Unset phi, or use a flux-conditioned bundle."
            )
        sequence = card.get("sequence")
        if sequence is not None and self.block_latents < sequence["halo_latents"]:
            raise ValueError(
                f"InjectCRAB.block_latents is {self.block_latents}, below the halo of "
                f"{sequence['halo_latents']} latent positions of model {card['name']!r}. "
                f"Set block_latents to at least {sequence['halo_latents']}."
            )

    def _solar_cycle(self):
        """Return the solar-cycle model that gives phi(t)."""
        from ..mc.config import MCConfig, SolarCycleConfig

        if self.mc_config is None:
            return SolarCycleConfig()
        return MCConfig.from_toml(self.mc_config).solar_cycle

    def _condition(self, ob, card, solar_cycle):
        """Return the network-space condition of an observation and its phi (GV)."""
        phi_gv, origin = observation_phi_gv(ob, self.phi, self.phi_date, solar_cycle)
        try:
            condition = network_condition(card, phi_gv)
        except ValueError as err:
            raise ValueError(
                f"{err} It comes from {origin} for observation {ob.name!r}. Set "
                "InjectCRAB.phi inside that range, or use a model trained over it."
            ) from err
        return condition, phi_gv

    def _plan_observation(self, ob, card, detectors, solar_cycle=None):
        """Validate one observation and return what to inject where."""
        all_dets = ob.select_local_detectors(detectors)
        dets = ob.select_local_detectors(detectors, flagmask=self.det_mask)
        focalplane = ob.telescope.focalplane

        rate_hz = focalplane.sample_rate.to_value(u.Hz)
        card_rate_hz = float(card["sample_rate_hz"])
        if abs(rate_hz - card_rate_hz) > _RATE_RTOL * card_rate_hz:
            raise ValueError(
                f"Observation {ob.name!r} is sampled at {rate_hz} Hz but model "
                f"{card['name']!r} was trained at {card_rate_hz} Hz. Use a bundle "
                f"trained at {rate_hz} Hz, or simulate the detectors at {card_rate_hz} Hz."
            )

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

        condition, phi_gv = (), None
        if card["conditioning"]:
            condition, phi_gv = self._condition(ob, card, solar_cycle)

        return {
            "all_dets": all_dets,
            "dets": dets,
            "scale": scale,
            "first_sample": self._session_offset(ob, rate_hz) + ob.local_index_offset,
            "condition": condition,
            "phi_gv": phi_gv,
        }

    def _unit_scale(self, ob, focalplane, dets, units):
        """Return per-detector factors from W to ``units``."""
        return watts_to_units_factors(
            focalplane,
            dets,
            units,
            calibration=self.calibration,
            optical_efficiency=self.optical_efficiency,
            operator="InjectCRAB",
            target=f"{self.det_data!r} of observation {ob.name!r}",
        )

    @staticmethod
    def _session_offset(ob, rate_hz):
        """Return the session-grid index of the observation's first sample."""
        start = getattr(ob.session, "start", None)
        if start is None or ob.n_local_samples == 0:
            return 0
        times = ob.shared[defaults.times].data
        first = times[0] - ob.local_index_offset / rate_hz
        # NOTE: exact when samples lie on the session's sample grid, as in SimSatellite.
        return max(0, int(round((first - start.timestamp()) * rate_hz)))

    def _stream_uids(self, ob, dets):
        """Return the uid that keys each detector's stream: its own or its wafer's."""
        focalplane = ob.telescope.focalplane
        if self.streams == "detector":
            return [int(focalplane[det]["uid"]) for det in dets]
        table = focalplane.detector_data
        if self.wafer_key in table.colnames:
            wafer_of = {str(n): str(w) for n, w in zip(table["name"], table[self.wafer_key])}
            return [int(name_UID(f"wafer:{wafer_of[str(det)]}")) for det in dets]
        return [int(name_UID(f"wafer:{ob.telescope.name}"))] * len(dets)

    def _inject_observation(self, ob, plan, generator):
        # One request per distinct stream; with streams="wafer" a request feeds
        # every local detector of its wafer.
        members = dict()
        for index, uid in enumerate(self._stream_uids(ob, plan["dets"])):
            members.setdefault(uid, []).append(index)
        requests = [
            StreamRequest(
                stream_keys(self.realization, ob.telescope.uid, ob.session.uid, uid),
                plan["first_sample"],
                ob.n_local_samples,
                plan["condition"],
            )
            for uid in members
        ]
        groups = list(members.values())

        # One view per detector, taken once: detdata indexing costs tens of
        # microseconds per call.
        targets = [ob.detdata[self.det_data][det] for det in plan["dets"]]
        scales = [plan["scale"][det] for det in plan["dets"]]
        flags = None
        if self.det_flag_mask != 0:
            flags = [ob.detdata[self.det_flags][det] for det in plan["dets"]]
        for request_index, offset, values_w in generator.iter_segments(requests):
            segment = slice(offset, offset + values_w.size)
            for index in groups[request_index]:
                values = values_w * scales[index]
                if flags is not None:
                    good = (flags[index][segment] & self.det_flag_mask) == 0
                    targets[index][segment][good] += values[good]
                else:
                    targets[index][segment] += values

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
