"""What the demo's stages produce (markdown sections, flat metrics, pictures) and the statistics its tables
quote: percentile-bootstrap intervals over features."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..io import write_atomic, write_json

N_BOOT = 2000  # resamples: the 2.5 % / 97.5 % percentiles move by < 1 % of the interval between seeds
LEVEL = 0.95


@dataclass
class Report:
    """The demo's output directory `out`, the report's sections in order and its flat metrics
    (`"interp.iou.model": 0.42`, ...). Stages add to it; `write` puts report.md and metrics.json in `out`."""

    out: Path
    sections: list[str] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.out = Path(self.out)

    def add(self, title: str, body: str) -> None:
        """A `## title` section with a markdown body (leading/trailing blank lines dropped)."""
        self.sections.append(f"## {title}\n\n{body.strip()}\n")

    def markdown(self, head: str = "") -> str:
        return (head.rstrip() + "\n\n" if head else "") + "\n".join(self.sections)

    def write(self, head: str = "") -> None:
        """report.md and metrics.json, each written atomically."""
        write_atomic(self.out / "report.md", self.markdown(head))
        write_json(self.out / "metrics.json", self.metrics)


def bootstrap_ci(statistic: Callable[[np.ndarray], np.ndarray], n: int, n_boot: int = N_BOOT, level: float = LEVEL,
                 seed: int = 0) -> tuple[float, float] | None:
    """Percentile bootstrap interval of a statistic of n rows (features): `statistic(idx_RN)` gets R
    resamples of row indices (drawn with replacement) and returns the R statistic values. None for n < 2
    (a single row has no spread to resample). Resamples whose statistic is not finite (a ratio whose
    denominator resampled to 0) are dropped; None if all are."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot!r}")
    if n < 2:
        return None
    idx_RN = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    vals_R = np.asarray(statistic(idx_RN), dtype=np.float64)
    vals_R = vals_R[np.isfinite(vals_R)]
    if len(vals_R) == 0:
        return None
    tail = (1 - level) / 2
    lo, hi = np.quantile(vals_R, [tail, 1 - tail])
    return float(lo), float(hi)


def mean_ci(values: Sequence[float], **kw) -> tuple[float, float] | None:
    """The interval of the mean of `values` (one per feature)."""
    x_N = np.asarray(values, dtype=np.float64)
    return bootstrap_ci(lambda idx_RN: x_N[idx_RN].mean(1), len(x_N), **kw)


def ratio_ci(num: Sequence[float], den: Sequence[float], **kw) -> tuple[float, float] | None:
    """The interval of mean(num) / mean(den) for paired per-feature values: one resample of features
    draws both, so a feature's model score and its baseline stay together."""
    a_N, b_N = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    if a_N.shape != b_N.shape:
        raise ValueError(f"{len(a_N)} numerator values but {len(b_N)} denominator values")
    with np.errstate(divide="ignore", invalid="ignore"):
        return bootstrap_ci(lambda idx_RN: a_N[idx_RN].mean(1) / b_N[idx_RN].mean(1), len(a_N), **kw)


def fmt_ci(value: float | None, ci: tuple[float, float] | None, digits: int = 3, suffix: str = "") -> str:
    """'0.412 [0.371, 0.455]' (value and 95 % interval), '-' when there is no value."""
    if value is None:
        return "-"
    s = f"{value:.{digits}f}{suffix}"
    return s if ci is None else f"{s} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"
