"""Reference Monte-Carlo of cosmic-ray hits on LiteBIRD TES bolometers (NumPy and SciPy only).

The MC draws galactic cosmic rays at L2 from the Corti et al. 2019 proton LIS with
force-field solar modulation, where phi is a parameter or comes from a date through a
solar-cycle model. It then draws hits on the silicon wafer and on each TES island, energy
deposits (Bethe mean loss and Landau straggling), the linear TES response, and a filtered
and decimated readout. ``simulate_training_chunks``
produces chunks for the generator training sets; ``crab-mc`` is its command line.
``HitSampler`` and ``BlockRenderer`` are the pieces that the TOAST operator
``toast_crab.ops.SimCosmicRayMC`` drives with TOAST's counter-based RNG.
"""

from toast_crab.mc.blocks import BlockRenderer, GroupResponse
from toast_crab.mc.config import (
    DetectorConfig,
    EnvironmentConfig,
    MCConfig,
    MCWarning,
    ReadoutConfig,
    SolarCycleConfig,
    WaferConfig,
)
from toast_crab.mc.environment import SpectrumSampler, omnidirectional_flux_cm2_s
from toast_crab.mc.hits import HIT_UNIFORMS, HitSampler, Hits, poisson_counts
from toast_crab.mc.plots import plot_chunks, plot_solar_cycle
from toast_crab.mc.simulate import (
    LABEL_NAMES,
    SimulatedTimestream,
    TimelineSimulator,
    TrainingChunks,
    simulate_timestream,
    simulate_training_chunks,
)
from toast_crab.mc.solar_cycle import phi_at_date

__all__ = [
    "BlockRenderer",
    "DetectorConfig",
    "EnvironmentConfig",
    "GroupResponse",
    "HIT_UNIFORMS",
    "HitSampler",
    "Hits",
    "LABEL_NAMES",
    "MCConfig",
    "MCWarning",
    "ReadoutConfig",
    "SimulatedTimestream",
    "SolarCycleConfig",
    "SpectrumSampler",
    "TimelineSimulator",
    "TrainingChunks",
    "WaferConfig",
    "omnidirectional_flux_cm2_s",
    "phi_at_date",
    "plot_chunks",
    "plot_solar_cycle",
    "poisson_counts",
    "simulate_timestream",
    "simulate_training_chunks",
]
