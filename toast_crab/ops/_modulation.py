"""Solar modulation potential phi for the cosmic-ray operators.

InjectCRAB (for flux-conditioned models) and SimCosmicRayMC take phi the same way:
a fixed ``phi`` trait, or phi(t) of a solar-cycle model at ``phi_date``, which is
either an ISO 8601 date or "observation" (the session start of each observation).
"""

import datetime
import math

import numpy as np
import traitlets
from astropy import units as u
from toast.mpi import MPI
from toast.observation import default_values as defaults

from ..mc.solar_cycle import parse_date

__all__ = [
    "PHI_DATE_OBSERVATION",
    "check_phi",
    "check_phi_date",
    "first_sample_time",
    "observation_phi_gv",
]

PHI_DATE_OBSERVATION = "observation"


def check_phi(value):
    """Return a valid ``phi`` trait value (None or a potential >= 0), else raise TraitError."""
    if value is None:
        return value
    if not value.unit.is_equivalent(u.GV):
        raise traitlets.TraitError(
            f"phi must be an electric potential such as Quantity('0.35 GV'). Got {value}."
        )
    phi_gv = value.to_value(u.GV)
    if not (np.isfinite(phi_gv) and phi_gv >= 0.0):
        raise traitlets.TraitError(
            f"phi must be >= 0 GV. Got {value}. Near solar minimum phi is about "
            "0.3 GV, at a strong maximum about 1 GV."
        )
    return value


def check_phi_date(value):
    """Return a valid ``phi_date`` trait value, else raise TraitError."""
    if value != PHI_DATE_OBSERVATION:
        try:
            parse_date(value, name="phi_date")
        except (TypeError, ValueError) as error:
            raise traitlets.TraitError(
                f"{error}, or use '{PHI_DATE_OBSERVATION}' for the date of each observation"
            ) from error
    return value


def first_sample_time(ob):
    """Return the UTC datetime of the observation's first sample, the same on every process.

    Collective over the observation's group communicator.
    """
    times = ob.shared[defaults.times].data
    local_first = float(times[0]) if ob.local_index_offset == 0 and len(times) else math.inf
    comm = ob.comm.comm_group
    first = local_first if comm is None else comm.allreduce(local_first, op=MPI.MIN)
    return datetime.datetime.fromtimestamp(first, tz=datetime.timezone.utc)


def observation_phi_gv(ob, phi, phi_date, solar_cycle):
    """Return phi of an observation in GV, and where it came from.

    Args:
        ob (toast.Observation): The observation.
        phi (Quantity): The fixed phi trait, or None.
        phi_date (str): ``PHI_DATE_OBSERVATION`` or an ISO 8601 date.
        solar_cycle (SolarCycleConfig): Model of phi(t).

    Returns:
        (tuple): ``(phi_gv, origin)``, origin being a phrase for messages.
    """
    if phi is not None:
        return float(phi.to_value(u.GV)), "the phi trait"
    if phi_date != PHI_DATE_OBSERVATION:
        moment = phi_date
    else:
        moment = getattr(ob.session, "start", None)
        if moment is None:
            moment = first_sample_time(ob)
    return float(solar_cycle.phi_gv(moment)), f"the solar-cycle model at {moment}"
