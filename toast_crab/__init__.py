"""toast_crab: cosmic-ray background timestreams for LiteBIRD in TOAST 3.

The TOAST operators are imported on first use, so ``import toast_crab`` stays cheap
for the MC and training tools.
"""

from ._version import __version__

__all__ = ["InjectCRAB", "__version__"]


def __getattr__(name):
    if name == "InjectCRAB":
        from .ops import InjectCRAB

        return InjectCRAB
    raise AttributeError(f"module 'toast_crab' has no attribute {name!r}")
