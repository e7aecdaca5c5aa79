"""Small statistics shared by the scores: random-baseline trial means, balanced accuracy, summaries."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Baseline:
    """A random baseline estimated from `trials` independent trials: the mean of the trial values and its
    standard error (std of the trial values / sqrt(trials); NaN with a single trial)."""

    mean: float
    se: float
    trials: int

    @staticmethod
    def of(trial_values: Iterable[float]) -> Baseline:
        vals = np.asarray(list(trial_values), dtype=np.float64)
        if len(vals) == 0:
            raise ValueError("a baseline needs at least one trial")
        se = float(vals.std(ddof=1) / math.sqrt(len(vals))) if len(vals) > 1 else float("nan")
        return Baseline(float(vals.mean()), se, len(vals))

    def to_dict(self) -> dict:
        return asdict(self)


def balanced_accuracy(truth: Iterable[bool], predicted: Iterable[bool]) -> float:
    """(true-positive rate + true-negative rate) / 2; a class with no examples counts as chance (0.5) so
    that a one-sided sample neither rewards nor punishes a judge."""
    t = np.asarray(list(truth), dtype=bool)
    p = np.asarray(list(predicted), dtype=bool)
    if t.shape != p.shape:
        raise ValueError(f"{len(t)} labels but {len(p)} predictions")
    tpr = float((p & t).sum() / t.sum()) if t.any() else 0.5
    tnr = float((~p & ~t).sum() / (~t).sum()) if (~t).any() else 0.5
    return (tpr + tnr) / 2


def mean_se(values: Iterable[float]) -> dict:
    """{"mean", "se", "n"} over features (se = std / sqrt(n), None below two values)."""
    vals = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=np.float64)
    if len(vals) == 0:
        return {"mean": None, "se": None, "n": 0}
    se = float(vals.std(ddof=1) / math.sqrt(len(vals))) if len(vals) > 1 else None
    return {"mean": float(vals.mean()), "se": se, "n": int(len(vals))}


def ratio(model: float | None, random: float | None) -> float | None:
    """model / random baseline; None when either is missing or the baseline is 0."""
    if model is None or random is None or random == 0:
        return None
    return float(model / random)
