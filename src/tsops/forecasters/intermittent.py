"""Intermittent demand: telling such series apart, and the methods that forecast them.

A series is *intermittent* when most periods see no demand at all (spare parts,
slow-moving products, bike models sold a few times a year). Smoothing or ARIMA models
chase the zeros and the spikes; the methods here forecast the demand *rate* instead
(Croston and its variants, TSB, temporal aggregation with ADIDA / IMAPA).

Detection follows Syntetos, Boylan and Croston (2005, "On the categorization of demand
patterns", JORS 56): two numbers describe a demand series,

- ``adi``, the average demand interval: periods per period with demand
  (``len(y) / count(y != 0)``), 1 when every period sees demand;
- ``cv2``, the squared coefficient of variation of the non-zero demand sizes.

Their cut-offs, ADI 1.32 and CV² 0.49, split series into four classes: *smooth*
(ADI < 1.32, CV² < 0.49), *erratic* (ADI < 1.32, CV² >= 0.49), *intermittent*
(ADI >= 1.32, CV² < 0.49) and *lumpy* (ADI >= 1.32, CV² >= 0.49). The cut-offs are
where Croston's method (SBA) starts to beat exponential smoothing in their study.
``is_intermittent`` takes the last two (ADI >= 1.32, whatever the CV²) as the series
that need intermittent methods, and asks for a share of zero periods too so that a
series that merely starts late, or has the odd zero, stays on the regular path.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

#: Syntetos–Boylan cut-off of the average demand interval (periods per demand)
SB_ADI_CUTOFF = 1.32
#: Syntetos–Boylan cut-off of the squared coefficient of variation of demand sizes
SB_CV2_CUTOFF = 0.49
#: default share of zero periods from which a series counts as intermittent
DEFAULT_MIN_ZERO_SHARE = 0.3

#: the model.yaml candidates (name -> kind and params) the intermittent class gets
#: unless model.yaml's ``intermittent.candidates`` names others: Croston with the
#: Syntetos–Boylan bias correction, TSB (which lets the demand probability decay, so
#: a product that stopped selling is forecast to fade out), and the two temporal
#: aggregation methods (ADIDA at the mean demand interval, IMAPA over all levels up to it)
DEFAULT_CANDIDATES: dict[str, dict[str, Any]] = {
    "croston_sba": {"kind": "intermittent", "params": {"method": "CrostonSBA"}},
    "tsb": {
        "kind": "intermittent",
        "params": {"method": "TSB", "options": {"alpha_d": 0.1, "alpha_p": 0.1}},
    },
    "adida": {"kind": "intermittent", "params": {"method": "ADIDA"}},
    "imapa": {"kind": "intermittent", "params": {"method": "IMAPA"}},
}


class DemandProfile(NamedTuple):
    """The numbers intermittency is judged by (unpacks as ``zero_share, adi, cv2``)."""

    #: share of periods with zero demand, in [0, 1]
    zero_share: float
    #: periods per period with demand (>= 1; inf when no period has demand)
    adi: float
    #: squared coefficient of variation of the non-zero demand sizes (0 for one demand,
    #: nan when there is none)
    cv2: float


def demand_profile(y: Any) -> DemandProfile:
    """The zero share, average demand interval and CV² of the demand series ``y``.

    Missing (non-finite) values are left out: they are neither demand nor its absence.
    """
    values = np.asarray(y, dtype=float).ravel()
    values = values[np.isfinite(values)]
    n = values.size
    if n == 0:
        return DemandProfile(float("nan"), float("nan"), float("nan"))
    sizes = values[values != 0]
    zero_share = 1.0 - sizes.size / n
    if sizes.size == 0:
        return DemandProfile(zero_share, float("inf"), float("nan"))
    adi = n / sizes.size
    mean = float(np.mean(sizes))
    cv2 = float(np.var(sizes) / mean**2) if mean != 0 else float("inf")
    return DemandProfile(zero_share, adi, cv2)


def is_intermittent(
    y: Any,
    min_zero_share: float = DEFAULT_MIN_ZERO_SHARE,
    min_adi: float = SB_ADI_CUTOFF,
) -> bool:
    """Whether ``y`` should be forecast with intermittent-demand methods.

    True when at least ``min_zero_share`` of its periods have zero demand and its
    average demand interval is at least ``min_adi`` (Syntetos–Boylan's 1.32 by
    default: their *intermittent* and *lumpy* classes), and no value is negative
    (intermittent methods forecast a non-negative demand rate; a series that goes
    below zero is not demand). A series without a single demand counts as
    intermittent: its forecast is zero.
    """
    values = np.asarray(y, dtype=float).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0 or (values < 0).any():
        return False
    zero_share, adi, _ = demand_profile(values)
    return zero_share >= min_zero_share and adi >= min_adi


def demand_class(y: Any) -> str:
    """Syntetos–Boylan class of ``y``: ``smooth``, ``erratic``, ``intermittent``,
    ``lumpy``, or ``none`` when it has no demand at all."""
    _, adi, cv2 = demand_profile(y)
    if not np.isfinite(adi):
        return "none"
    sparse = adi >= SB_ADI_CUTOFF
    variable = cv2 >= SB_CV2_CUTOFF
    if sparse:
        return "lumpy" if variable else "intermittent"
    return "erratic" if variable else "smooth"
