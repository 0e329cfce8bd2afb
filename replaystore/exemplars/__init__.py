"""Exemplar buffers (iCaRL/PyCIL memory) with MEMO byte budgets that count the model too.

`store.exemplars(name, budget=..., model=..., policy=..., selector=...)` opens or creates one;
`budget` holds the byte arithmetic, `selectors` the ranking rules, `policies` the per-class quotas.
"""

from replaystore.exemplars.budget import (
    FairBudget,
    bytes_for,
    count_parameters,
    dtype_nbytes,
    exemplars_in,
    fair_budget,
    model_nbytes,
    sample_nbytes,
)
from replaystore.exemplars.buffer import Change, ExemplarBuffer, ExemplarSet
from replaystore.exemplars.policies import FixedPerClass, FixedTotal, Quota
from replaystore.exemplars.selectors import SELECTORS, closest_to_centre_order, herding_order, k_center_order

__all__ = [
    "SELECTORS",
    "Change",
    "ExemplarBuffer",
    "ExemplarSet",
    "FairBudget",
    "FixedPerClass",
    "FixedTotal",
    "Quota",
    "bytes_for",
    "closest_to_centre_order",
    "count_parameters",
    "dtype_nbytes",
    "exemplars_in",
    "fair_budget",
    "herding_order",
    "k_center_order",
    "model_nbytes",
    "sample_nbytes",
]
