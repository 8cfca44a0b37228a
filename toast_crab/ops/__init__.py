"""TOAST operators of toast_crab."""

from .inject_crab import InjectCRAB
from .sim_cosmic_ray_mc import SimCosmicRayMC

__all__ = ["InjectCRAB", "SimCosmicRayMC"]
