"""LiteBIRD focal planes for TOAST from the public LiteBIRD instrument model.

The instrument model (IMo) used here is the public release ``vPTEP`` (February 2023)
that ships inside ``litebird_sim`` as ``litebird_sim/default_imo/schema.json.gz``. It
is opened offline with litebird_sim's :class:`litebird_sim.Imo` API, so nothing is
fetched from the network.

Facts taken from that IMo (release vPTEP):

* 22 frequency channels on three telescopes (LFT, MFT, HFT), 4508 detectors, each
  pixel carrying one T/B detector pair.
* Every detector quaternion in the public IMo is the identity, so all detectors of a
  telescope look along its boresight. Only the polarization angle differs between
  detectors.
* Sample rate 31 Hz, which is older than the current design rate of 19.1 Hz
  (Bortolami et al. 2025, "First release of LiteBIRD simulations from an end-to-end
  pipeline", arXiv:2507.07122). The focal planes built here default to 19.1 Hz.

The conversion from absorbed power to K_CMB lives in :mod:`toast_crab.calibration`.
"""

import argparse
import datetime
import functools
import os
from dataclasses import dataclass

import numpy as np
import toast.qarray as qa
from astropy import units as u
from astropy.table import Column, QTable
from toast.instrument import Focalplane, SpaceSite, Telescope
from toast.schedule_sim_satellite import create_satellite_schedule
from toast.utils import Logger

__all__ = [
    "DEFAULT_CHANNEL",
    "DEFAULT_MISSION_START",
    "DEFAULT_N_DETECTORS",
    "IMO_RELEASE",
    "LITEBIRD_SAMPLE_RATE",
    "ScanningParameters",
    "list_channels",
    "litebird_focalplane",
    "litebird_schedule",
    "litebird_scanning",
    "litebird_telescope",
    "load_imo",
    "telescope_of_channel",
    "write_toast_inputs",
]

IMO_RELEASE = "vPTEP"

TELESCOPES = ("LFT", "MFT", "HFT")

# Current LiteBIRD design sample rate (Bortolami et al. 2025, arXiv:2507.07122).
LITEBIRD_SAMPLE_RATE = 19.1 * u.Hz

# The cosmic-ray reference MC models LFT-like square silicon wafers, so the default
# is an LFT channel. 140 GHz is the LFT band closest to the CMB peak and is also
# observed by the MFT (M1-140), which allows cross-checks between telescopes.
DEFAULT_CHANNEL = "L4-140"

DEFAULT_N_DETECTORS = 8

# The start date only sets where the Sun is, hence which part of the sky the first
# days cover. Dates past the end of the IERS leap-second table make ERFA warn about
# a "dubious year", so the default stays inside it.
DEFAULT_MISSION_START = datetime.datetime(2025, 1, 1, tzinfo=datetime.timezone.utc)


@functools.lru_cache(maxsize=1)
def load_imo():
    """Open the public LiteBIRD instrument model bundled with litebird_sim.

    The flat file is read from the installed ``litebird_sim`` package, so no network
    access and no ``~/.config/litebird_imo`` setup are needed. The result is cached.

    Returns:
        (litebird_sim.Imo): The instrument model, containing release ``vPTEP``.

    """
    import litebird_sim

    return litebird_sim.Imo(flatfile_location=litebird_sim.PTEP_IMO_LOCATION)


def _query_metadata(imo, path):
    """Return the metadata dictionary of the IMo data file at ``path``."""
    return dict(imo.query(f"/releases/{IMO_RELEASE}/satellite/{path}").metadata)


def list_channels(imo=None):
    """List the frequency channels of the instrument model.

    Args:
        imo (litebird_sim.Imo):  The instrument model. None loads the bundled one.

    Returns:
        (dict):  Channel name (for example ``"L4-140"``) to telescope name, in the
            order of the IMo.

    """
    if imo is None:
        imo = load_imo()
    channels = dict()
    for telescope in TELESCOPES:
        info = _query_metadata(imo, f"{telescope}/instrument_info")
        for channel in info["channel_names"]:
            channels[channel] = telescope
    return channels


def telescope_of_channel(channel, imo=None):
    """Return the telescope ("LFT", "MFT" or "HFT") that carries a channel.

    Args:
        channel (str):  IMo channel name, for example ``"L4-140"`` or ``"M1-140"``.
        imo (litebird_sim.Imo):  The instrument model. None loads the bundled one.

    Returns:
        (str):  The telescope name.

    Raises:
        TypeError:  If ``channel`` is not a string.
        ValueError:  If the channel is not in the instrument model.

    """
    if not isinstance(channel, str):
        raise TypeError(
            f"channel must be a string such as {DEFAULT_CHANNEL!r}, "
            f"got {type(channel).__name__} {channel!r}"
        )
    channels = list_channels(imo)
    if channel not in channels:
        raise ValueError(
            f"Unknown LiteBIRD channel {channel!r}. Valid channels in IMo release "
            f"{IMO_RELEASE}: {', '.join(channels)}"
        )
    return channels[channel]


def _check_n_detectors(n_detectors, n_available, channel):
    """Validate a detector count against the channel size."""
    if n_detectors is None:
        return n_available
    if isinstance(n_detectors, bool) or not isinstance(n_detectors, (int, np.integer)):
        raise TypeError(
            f"n_detectors must be an integer or None, got "
            f"{type(n_detectors).__name__} {n_detectors!r}"
        )
    valid = f"an even number from 2 to {n_available}, or None for all"
    if n_detectors < 2 or n_detectors > n_available:
        raise ValueError(
            f"n_detectors={n_detectors} is out of range for channel {channel}, "
            f"which has {n_available} detectors. Use {valid}."
        )
    if n_detectors % 2 != 0:
        raise ValueError(
            f"n_detectors={n_detectors} is odd, but detectors of channel {channel} "
            f"come in T/B pairs sharing a pixel. Use {valid}."
        )
    return int(n_detectors)


def _check_sample_rate(sample_rate):
    """Validate a sample rate and return it in Hz."""
    if not isinstance(sample_rate, u.Quantity):
        raise TypeError(
            f"sample_rate must be an astropy Quantity such as 19.1 * u.Hz, "
            f"got {type(sample_rate).__name__} {sample_rate!r}"
        )
    if not sample_rate.unit.is_equivalent(u.Hz):
        raise ValueError(
            f"sample_rate must have frequency units, got {sample_rate!r}. "
            f"Pass for example 19.1 * u.Hz."
        )
    if not np.isfinite(sample_rate.value) or sample_rate.value <= 0:
        raise ValueError(
            f"sample_rate must be finite and positive, got {sample_rate!r}."
        )
    return sample_rate.to(u.Hz)


def _detector_table(detectors):
    """Build the TOAST focal-plane table from IMo detector metadata.

    Args:
        detectors (list):  IMo ``detector_info`` metadata dictionaries.

    Returns:
        (QTable):  One row per detector with the columns TOAST expects.

    """
    zaxis = np.array([0.0, 0.0, 1.0])
    quats = list()
    gammas = list()
    for det in detectors:
        # TOAST encodes the polarization orientation as a rotation about the
        # detector line of sight, applied after the IMo pointing quaternion.
        # The IMo angle is used as the TOAST "gamma" angle. A sign or 90 degree
        # convention difference would only relabel the Q/U basis.
        imo_quat = np.asarray(det["quat"], dtype=np.float64)
        imo_quat = imo_quat / np.linalg.norm(imo_quat)
        pol_rot = qa.rotation(zaxis, det["pol_angle_rad"])
        quats.append(qa.mult(imo_quat, pol_rot))
        gammas.append(det["pol_angle_rad"])

    n_det = len(detectors)
    return QTable(
        [
            Column(name="name", data=[d["name"] for d in detectors]),
            Column(name="quat", data=quats),
            Column(name="gamma", data=gammas, unit=u.rad),
            Column(name="pol_angle", data=np.mod(gammas, np.pi), unit=u.rad),
            Column(name="pol_leakage", data=np.zeros(n_det)),
            Column(name="pol_efficiency", data=np.ones(n_det)),
            Column(name="psi_pol", data=np.zeros(n_det), unit=u.rad),
            Column(name="fwhm", data=[d["fwhm_arcmin"] for d in detectors], unit=u.arcmin),
            Column(name="ellipticity", data=[d["ellipticity"] for d in detectors]),
            Column(
                name="bandcenter", data=[d["bandcenter_ghz"] for d in detectors], unit=u.GHz
            ),
            Column(
                name="bandwidth", data=[d["bandwidth_ghz"] for d in detectors], unit=u.GHz
            ),
            Column(
                name="psd_net",
                data=[d["net_ukrts"] * 1.0e-6 for d in detectors],
                unit=u.K * u.s**0.5,
            ),
            Column(
                name="psd_fknee",
                data=[d["fknee_mhz"] * 1.0e-3 for d in detectors],
                unit=u.Hz,
            ),
            Column(name="psd_fmin", data=[d["fmin_hz"] for d in detectors], unit=u.Hz),
            Column(name="psd_alpha", data=[d["alpha"] for d in detectors]),
            Column(
                name="pixel", data=[f"{d['wafer']}_{d['pixel']:03d}" for d in detectors]
            ),
            Column(name="wafer", data=[d["wafer"] for d in detectors]),
            Column(name="pixtype", data=[d["pixtype"] for d in detectors]),
            Column(name="channel", data=[d["channel"] for d in detectors]),
            Column(name="pol", data=[d["pol"] for d in detectors]),
            Column(name="orient", data=[d["orient"] for d in detectors]),
        ]
    )


def litebird_focalplane(
    channel=DEFAULT_CHANNEL,
    n_detectors=DEFAULT_N_DETECTORS,
    sample_rate=LITEBIRD_SAMPLE_RATE,
    imo=None,
    comm=None,
):
    """Build a TOAST focal plane for one LiteBIRD channel from the public IMo.

    The first ``n_detectors`` detectors of the channel are taken in IMo order, which
    lists the two detectors (T then B) of each pixel next to each other, so pairs
    stay together. Columns taken from the IMo: ``name``, ``quat`` (IMo quaternion
    times the polarization rotation), ``gamma`` and ``pol_angle`` (from
    ``pol_angle_rad``), ``fwhm``, ``ellipticity``, ``bandcenter``, ``bandwidth``,
    ``psd_net`` (from ``net_ukrts``), ``psd_fknee``, ``psd_fmin``, ``psd_alpha``,
    ``wafer``, ``pixtype``, ``channel``, ``pol``, ``orient``. ``pixel`` is
    ``"<wafer>_<pixel index>"``, unique within the channel, so that
    ``SimSatellite(detset_key="pixel")`` keeps each pair on one process. ``uid`` is
    the hash of the detector name, computed by TOAST.

    The IMo gives the noise as a NET in µK√s, copied unchanged into ``psd_net``.
    TOAST's ``DefaultNoiseModel`` and ``SimNoise`` then draw white noise with a
    per-sample standard deviation of NET × √(sample rate), the convention that
    litebird_sim uses too.

    Args:
        channel (str):  IMo channel name, for example ``"L4-140"`` or ``"M1-140"``.
        n_detectors (int):  Number of detectors to keep, even, from 2 to the size of
            the channel. None keeps the whole channel.
        sample_rate (Quantity):  Detector sample rate. It replaces the 31 Hz of the
            IMo, and the replacement is logged.
        imo (litebird_sim.Imo):  The instrument model. None loads the bundled one.
        comm (mpi4py.MPI.Comm):  If given, the log line is written once on rank 0.

    Returns:
        (Focalplane):  The focal plane, with ``sample_rate`` set.

    Raises:
        TypeError:  For a channel that is not a string, a non-integer detector count
            or a sample rate without units.
        ValueError:  For an unknown channel, a detector count out of range or odd, or
            a sample rate that is not a positive frequency.

    """
    log = Logger.get()
    if imo is None:
        imo = load_imo()
    telescope = telescope_of_channel(channel, imo=imo)
    sample_rate = _check_sample_rate(sample_rate)

    channel_info = _query_metadata(imo, f"{telescope}/{channel}/channel_info")
    names = channel_info["detector_names"]
    n_detectors = _check_n_detectors(n_detectors, len(names), channel)

    detectors = [
        _query_metadata(imo, f"{telescope}/{channel}/{name}/detector_info")
        for name in names[:n_detectors]
    ]
    imo_rate = u.Quantity(channel_info["sampling_rate_hz"], u.Hz)
    if not u.isclose(imo_rate, sample_rate):
        log.info_rank(
            f"LiteBIRD {channel}: sample rate {sample_rate.to_value(u.Hz):g} Hz "
            f"replaces the IMo {IMO_RELEASE} rate of {imo_rate.to_value(u.Hz):g} Hz",
            comm=comm,
        )

    return Focalplane(
        detector_data=_detector_table(detectors),
        sample_rate=sample_rate,
    )


def litebird_telescope(
    channel=DEFAULT_CHANNEL,
    n_detectors=DEFAULT_N_DETECTORS,
    sample_rate=LITEBIRD_SAMPLE_RATE,
    imo=None,
    comm=None,
):
    """Build a TOAST telescope at L2 for one LiteBIRD channel.

    The telescope is named ``"LiteBIRD-<LFT|MFT|HFT>"`` and sits at a
    :class:`toast.instrument.SpaceSite` named ``"L2"``. The arguments are those of
    :func:`litebird_focalplane`.

    Returns:
        (Telescope):  The telescope with its focal plane.

    """
    if imo is None:
        imo = load_imo()
    focalplane = litebird_focalplane(
        channel=channel,
        n_detectors=n_detectors,
        sample_rate=sample_rate,
        imo=imo,
        comm=comm,
    )
    name = f"LiteBIRD-{telescope_of_channel(channel, imo=imo)}"
    return Telescope(name, focalplane=focalplane, site=SpaceSite("L2"))


@dataclass(frozen=True)
class ScanningParameters:
    """LiteBIRD scanning strategy and HWP rate, in the terms TOAST uses.

    Attributes:
        prec_angle (Quantity):  Angle between the spin axis and the anti-Sun
            direction, which is the precession axis (SimSatellite ``prec_angle``).
        spin_angle (Quantity):  Angle between the telescope boresight and the spin
            axis (SimSatellite ``spin_angle``).
        spin_period (Quantity):  Period of the spin about the spin axis.
        prec_period (Quantity):  Period of the precession of the spin axis.
        hwp_rpm (float):  Rotation rate of the telescope's half-wave plate, in
            revolutions per minute (SimSatellite ``hwp_rpm``).
        telescope (str):  "LFT", "MFT" or "HFT".

    """

    prec_angle: u.Quantity
    spin_angle: u.Quantity
    spin_period: u.Quantity
    prec_period: u.Quantity
    hwp_rpm: float
    telescope: str


def litebird_scanning(telescope="LFT", imo=None):
    """Read the LiteBIRD scanning strategy and HWP rate from the public IMo.

    Source: IMo release vPTEP bundled with litebird_sim. The data file
    ``satellite/scanning_parameters`` gives ``spin_sun_angle_deg`` = 45 (the
    precession angle), ``spin_rate_rpm`` = 0.05 (a 20 min spin period) and
    ``precession_period_min`` = 192.348. Each ``satellite/<telescope>/instrument_info``
    gives ``spin_boresight_angle_deg`` = 50 and ``hwp_rpm`` = 46 (LFT), 39 (MFT) or
    61 (HFT).

    Args:
        telescope (str):  "LFT", "MFT" or "HFT".
        imo (litebird_sim.Imo):  The instrument model. None loads the bundled one.

    Returns:
        (ScanningParameters):  Angles and periods as Quantities, HWP rate in rpm.

    Raises:
        ValueError:  For an unknown telescope name.

    """
    if telescope not in TELESCOPES:
        raise ValueError(
            f"Unknown LiteBIRD telescope {telescope!r}. Valid telescopes: "
            f"{', '.join(TELESCOPES)}"
        )
    if imo is None:
        imo = load_imo()
    scan = _query_metadata(imo, "scanning_parameters")
    info = _query_metadata(imo, f"{telescope}/instrument_info")
    return ScanningParameters(
        prec_angle=scan["spin_sun_angle_deg"] * u.deg,
        spin_angle=info["spin_boresight_angle_deg"] * u.deg,
        spin_period=(1.0 / scan["spin_rate_rpm"]) * u.min,
        prec_period=scan["precession_period_min"] * u.min,
        hwp_rpm=float(info["hwp_rpm"]),
        telescope=telescope,
    )


def litebird_schedule(
    num_observations=2,
    observation_time=12 * u.hour,
    gap_time=0 * u.s,
    mission_start=DEFAULT_MISSION_START,
    telescope="LFT",
    imo=None,
):
    """Create a satellite observing schedule with the LiteBIRD spin and precession.

    The spin and precession periods come from :func:`litebird_scanning`. The angles
    are not part of a TOAST schedule: pass ``prec_angle`` and ``spin_angle`` of
    :func:`litebird_scanning` to ``toast.ops.SimSatellite``.

    Args:
        num_observations (int):  Number of observations, at least 1.
        observation_time (Quantity):  Length of each observation.
        gap_time (Quantity):  Time between observations.
        mission_start (datetime):  Timezone-aware start of the first observation.
        telescope (str):  "LFT", "MFT" or "HFT", written into the schedule.
        imo (litebird_sim.Imo):  The instrument model. None loads the bundled one.

    Returns:
        (SatelliteSchedule):  Observations named ``LB_<index>_<start time>``.

    Raises:
        TypeError:  If ``num_observations`` is not an integer.
        ValueError:  For fewer than one observation, a non-positive observation
            time, a negative gap or a start time without a time zone.

    """
    if isinstance(num_observations, bool) or not isinstance(
        num_observations, (int, np.integer)
    ):
        raise TypeError(
            f"num_observations must be an integer, got {num_observations!r}"
        )
    if num_observations < 1:
        raise ValueError(
            f"num_observations must be at least 1, got {num_observations}"
        )
    if observation_time.to_value(u.s) <= 0:
        raise ValueError(
            f"observation_time must be positive, got {observation_time!r}"
        )
    if gap_time.to_value(u.s) < 0:
        raise ValueError(f"gap_time must not be negative, got {gap_time!r}")
    if mission_start.tzinfo is None:
        raise ValueError(
            f"mission_start {mission_start.isoformat()} has no time zone. Pass a "
            f"timezone-aware datetime such as {DEFAULT_MISSION_START!r}."
        )
    scan = litebird_scanning(telescope=telescope, imo=imo)
    return create_satellite_schedule(
        prefix="LB_",
        mission_start=mission_start,
        observation_time=observation_time,
        gap_time=gap_time,
        num_observations=int(num_observations),
        prec_period=scan.prec_period,
        spin_period=scan.spin_period,
        site_name="L2",
        telescope_name=f"LiteBIRD-{telescope}",
    )


def write_toast_inputs(
    out_dir,
    channel=DEFAULT_CHANNEL,
    n_detectors=DEFAULT_N_DETECTORS,
    sample_rate=LITEBIRD_SAMPLE_RATE,
    num_observations=1,
    observation_time=1 * u.hour,
    mission_start=DEFAULT_MISSION_START,
):
    """Write a LiteBIRD telescope file and schedule file for ``toast_run``.

    ``toast.ops.SimSatellite`` reads them through its ``telescope_file`` and
    ``schedule_file`` traits.

    Args:
        out_dir (str):  Output folder, created if missing. Existing files of the
            same names are replaced.
        channel (str):  IMo channel name.
        n_detectors (int):  Number of detectors, see :func:`litebird_focalplane`.
        sample_rate (Quantity):  Detector sample rate.
        num_observations (int):  Number of observations.
        observation_time (Quantity):  Length of each observation.
        mission_start (datetime):  Timezone-aware start time.

    Returns:
        (tuple):  Paths ``(telescope_file, schedule_file)``, an HDF5 instrument file
            and an ECSV schedule.

    """
    from toast.io import save_instrument_file

    imo = load_imo()
    telescope = litebird_telescope(
        channel=channel, n_detectors=n_detectors, sample_rate=sample_rate, imo=imo
    )
    schedule = litebird_schedule(
        num_observations=num_observations,
        observation_time=observation_time,
        mission_start=mission_start,
        telescope=telescope_of_channel(channel, imo=imo),
        imo=imo,
    )
    os.makedirs(out_dir, exist_ok=True)
    telescope_file = os.path.join(out_dir, "telescope.h5")
    schedule_file = os.path.join(out_dir, "schedule.ecsv")
    if os.path.exists(telescope_file):
        os.remove(telescope_file)
    save_instrument_file(telescope_file, telescope, None)
    schedule.write(schedule_file)
    return telescope_file, schedule_file


def main(argv=None):
    """Write ``toast_run`` input files from the command line.

    Run ``python -m toast_crab.instrument --help`` for the options.
    """
    parser = argparse.ArgumentParser(
        prog="python -m toast_crab.instrument",
        description="Write a LiteBIRD telescope file (HDF5) and an observing "
        "schedule (ECSV) from the public LiteBIRD instrument model, for use with "
        "toast_run and SimSatellite.telescope_file / schedule_file.",
    )
    parser.add_argument("--out_dir", required=True, help="Output folder")
    parser.add_argument(
        "--channel", default=DEFAULT_CHANNEL, help="IMo channel name, e.g. L4-140"
    )
    parser.add_argument(
        "--n_detectors",
        type=int,
        default=DEFAULT_N_DETECTORS,
        help="Number of detectors (even), taken in IMo order",
    )
    parser.add_argument(
        "--sample_rate_hz",
        type=float,
        default=LITEBIRD_SAMPLE_RATE.to_value(u.Hz),
        help="Detector sample rate in Hz",
    )
    parser.add_argument(
        "--num_obs", type=int, default=1, help="Number of observations"
    )
    parser.add_argument(
        "--obs_minutes", type=float, default=60.0, help="Length of each observation in minutes"
    )
    parser.add_argument(
        "--mission_start",
        default=DEFAULT_MISSION_START.isoformat(),
        help="ISO 8601 start time with time zone",
    )
    args = parser.parse_args(argv)
    telescope_file, schedule_file = write_toast_inputs(
        args.out_dir,
        channel=args.channel,
        n_detectors=args.n_detectors,
        sample_rate=args.sample_rate_hz * u.Hz,
        num_observations=args.num_obs,
        observation_time=args.obs_minutes * u.minute,
        mission_start=datetime.datetime.fromisoformat(args.mission_start),
    )
    print(f"Wrote {telescope_file}")
    print(f"Wrote {schedule_file}")


if __name__ == "__main__":
    main()
