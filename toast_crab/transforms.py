"""Invertible amplitude transforms between watts and network space.

Cosmic-ray timestreams are heavy tailed: a direct hit on the TES island is tens of
times the wafer continuum. A network works on ``y = asinh(x / scale_w)``, which is linear
for ``|x| << scale_w`` and logarithmic in the tail, and its output goes back to watts
with ``x = scale_w * sinh(y)``. The constant is global (one per model bundle), so
absolute amplitudes survive; a per-window normalization would discard them.
"""

import numpy as np

__all__ = ["AsinhTransform", "transform_from_card"]


class AsinhTransform:
    """The map ``y = asinh(x / scale_w)`` and its inverse.

    Args:
        scale_w (float): Amplitude in W where the transform turns from linear to
            logarithmic. Must be positive and finite.
    """

    name = "asinh"

    def __init__(self, scale_w):
        scale_w = float(scale_w)
        if not (np.isfinite(scale_w) and scale_w > 0):
            raise ValueError(
                f"asinh transform scale_w must be a positive number of watts. Got {scale_w!r}."
            )
        self.scale_w = scale_w

    def forward(self, x_w):
        """Map watts to network space. Returns float64 of the input's shape."""
        return np.arcsinh(np.asarray(x_w, dtype=np.float64) / self.scale_w)

    def inverse(self, y):
        """Map network outputs back to watts. Returns float64 of the input's shape."""
        return self.scale_w * np.sinh(np.asarray(y, dtype=np.float64))

    def to_card(self):
        return {"name": self.name, "scale_w": self.scale_w}


_TRANSFORMS = {AsinhTransform.name: AsinhTransform}


def transform_from_card(entry):
    """Build a transform from the ``transform`` entry of a model card.

    Raises:
        ValueError: If the entry names an unknown transform or lacks its constants.
    """
    if not isinstance(entry, dict) or "name" not in entry:
        raise ValueError(
            f"Model card 'transform' must be a dict with a 'name'. Got {entry!r}."
        )
    name = entry["name"]
    if name not in _TRANSFORMS:
        raise ValueError(
            f"Unknown amplitude transform {name!r} in the model card; this toast_crab "
            f"knows {sorted(_TRANSFORMS)}. Upgrade toast_crab or retrain the model."
        )
    params = {key: value for key, value in entry.items() if key != "name"}
    try:
        return _TRANSFORMS[name](**params)
    except TypeError as err:
        raise ValueError(
            f"Model card transform {entry!r} has missing or unexpected constants ({err})."
        ) from err
