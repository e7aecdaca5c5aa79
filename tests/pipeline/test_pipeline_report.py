"""The demo's report and the bootstrap intervals its tables quote."""

import json

import numpy as np
import pytest

from mmsae.pipeline.report import Report, bootstrap_ci, fmt_ci, mean_ci, ratio_ci


def test_mean_interval_covers_the_mean_and_narrows_with_n():
    rng = np.random.default_rng(0)
    small, large = rng.normal(1.0, 1.0, 40), rng.normal(1.0, 1.0, 640)
    lo_s, hi_s = mean_ci(small)
    lo_l, hi_l = mean_ci(large)
    assert lo_s < small.mean() < hi_s and lo_l < large.mean() < hi_l
    # the standard error shrinks as 1/sqrt(n): 16x the data, about a quarter of the width
    assert 0.15 < (hi_l - lo_l) / (hi_s - lo_s) < 0.4
    assert mean_ci(small) == mean_ci(small)  # seeded: the same interval every time


def test_ratio_interval_resamples_pairs():
    num = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    lo, hi = ratio_ci(num, num / 2)  # a feature's baseline moves with its score: the ratio is exactly 2
    assert lo == pytest.approx(2.0) and hi == pytest.approx(2.0)
    with pytest.raises(ValueError, match="6 numerator values but 5"):
        ratio_ci(num, num[:5])


def test_degenerate_inputs():
    assert mean_ci([0.3]) is None  # one feature: no spread to resample
    assert ratio_ci([1.0, 1.0], [0.0, 0.0]) is None  # every resample divides by zero
    with pytest.raises(ValueError, match="level"):
        bootstrap_ci(lambda idx: idx.mean(1), 5, level=1.5)
    assert fmt_ci(0.41234, (0.3, 0.5)) == "0.412 [0.300, 0.500]"
    assert fmt_ci(None, None) == "-" and fmt_ci(2.0, None, 1, "x") == "2.0x"


def test_report_writes_markdown_and_flat_metrics(tmp_path):
    rep = Report(tmp_path)
    rep.add("A section", "\n\nbody text\n\n")
    rep.metrics["a.b"] = 1.5
    rep.write("# head")
    assert (tmp_path / "report.md").read_text() == "# head\n\n## A section\n\nbody text\n"
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"a.b": 1.5}
