"""Linear interpolation on a uniform grid by index arithmetic (no binary search)."""

import numpy as np


class UniformTable:
    """A monotone table resampled onto a uniform grid for fast linear interpolation.

    Queries outside [x_min, x_max] are clipped to the ends.

    Args:
        x (ndarray): (n,) float64, increasing abscissae of the source table.
        y (ndarray): (n,) float64, values at ``x``.
        n_points (int): Points of the uniform grid.
        x_min, x_max (float, optional): Grid range; the ends of ``x`` by default.
    """

    def __init__(self, x, y, n_points, x_min=None, x_max=None):
        self.x_min = float(x[0] if x_min is None else x_min)
        self.x_max = float(x[-1] if x_max is None else x_max)
        self.step = (self.x_max - self.x_min) / (n_points - 1)
        grid = self.x_min + self.step * np.arange(n_points)
        self.values = np.interp(grid, x, y)
        self.slopes = np.append(np.diff(self.values), 0.0)

    def __call__(self, query):
        position = (np.clip(query, self.x_min, self.x_max) - self.x_min) / self.step
        index = position.astype(np.int64)
        return self.values[index] + (position - index) * self.slopes[index]
