"""Small real forecasters for tests of the orchestration (no statistics needed)."""

from __future__ import annotations

import numpy as np

from tsops.forecasters.base import LocalModel, PerSeries, gaussian_intervals


class Last(LocalModel):
    """Repeats the last observation; interval width grows with sqrt(step)."""

    min_length = 1

    def fit(self, y):
        self.last_ = float(y[-1])
        return self

    def update(self, y):
        return type(self)().fit(y)

    def forecast(self, h, levels):
        return gaussian_intervals(np.full(h, self.last_), np.sqrt(np.arange(1, h + 1)), levels)


class Mean(LocalModel):
    """Repeats the training mean (kept fixed on update: it is the 'parameter')."""

    min_length = 1

    def fit(self, y):
        self.mean_ = float(np.mean(y))
        return self

    def update(self, y):
        return self

    def forecast(self, h, levels):
        return gaussian_intervals(np.full(h, self.mean_), np.ones(h), levels)


def last(freq="MS"):
    return PerSeries(Last(), freq=freq)


def mean(freq="MS"):
    return PerSeries(Mean(), freq=freq)
