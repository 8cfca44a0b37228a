"""Reference Monte-Carlo of cosmic-ray hits on LiteBIRD TES bolometers (NumPy and SciPy only).

The MC draws galactic cosmic rays at L2 (Corti et al. 2019 proton LIS, force-field solar
modulation), hits on the silicon wafer and on each TES island, energy deposits (Bethe mean
loss and Landau straggling), the linear TES response, and a filtered and decimated readout.
``simulate_training_chunks`` produces chunks for the generator training sets; ``crab-mc`` is
its command line.
"""

from toast_crab.mc.config import (
    DetectorConfig,
    EnvironmentConfig,
    MCConfig,
    MCWarning,
    ReadoutConfig,
    WaferConfig,
)
from toast_crab.mc.environment import SpectrumSampler, omnidirectional_flux_cm2_s
from toast_crab.mc.plots import plot_chunks
from toast_crab.mc.simulate import (
    LABEL_NAMES,
    SimulatedTimestream,
    TimelineSimulator,
    TrainingChunks,
    simulate_timestream,
    simulate_training_chunks,
)

__all__ = [
    "DetectorConfig",
    "EnvironmentConfig",
    "LABEL_NAMES",
    "MCConfig",
    "MCWarning",
    "ReadoutConfig",
    "SimulatedTimestream",
    "SpectrumSampler",
    "TimelineSimulator",
    "TrainingChunks",
    "WaferConfig",
    "omnidirectional_flux_cm2_s",
    "plot_chunks",
    "simulate_timestream",
    "simulate_training_chunks",
]
