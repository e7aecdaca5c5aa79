"""benchmarks/train_throughput.py: flat keys, and only the bound of the path the selection took."""

import pytest
from bench_run import run_benchmark, run_script

SMALL = ["--d-in", "32", "--latents", "256", "--k", "4", "--batch", "128", "--steps", "2", "--warmup-steps", "1",
         "--threads", "1"]


def _run(*args: str) -> dict:
    return run_benchmark("train_throughput.py", *SMALL, *args)


@pytest.mark.parametrize("selection, bound", [("int8", "int8_gemm"), ("fp32", "fp32_gemm")])
def test_forced_selection_reports_its_own_bound_only(selection, bound):
    out = _run("--selection", selection, "--impls", "mmsae,mmsae_fp32")
    assert out["train.selection_precision"] == {"fp32": "float32"}.get(selection, selection)
    assert out["train.selection_reason"] == "configured"
    assert out["train.bound"] == bound
    assert 0 < out["train.fraction_of_bound"] == pytest.approx(out["train.tokens_per_s.mmsae"]
                                                                / out["train.bound_tokens_per_s"])
    assert out["train.fraction_of_bound"] <= 1
    assert 0 < out["train.fraction_of_fp32_bound.mmsae_fp32"] <= 1
    assert not any("bf16" in key for key in out)  # no bound of a path that did not run
    assert all(isinstance(v, (int, float, str, list)) for v in out.values())  # flat


def test_auto_records_its_choice_and_a_missing_peer_is_an_error_entry():
    out = _run("--impls", "mmsae,sparsify")
    assert out["train.selection_precision"] in ("bfloat16", "int8", "float32")
    assert out["train.bound"] == {"bfloat16": "bf16_gemm", "int8": "int8_gemm",
                                  "float32": "fp32_gemm"}[out["train.selection_precision"]]
    try:
        import sparsify  # noqa: F401
    except ImportError:
        assert "sparsify" in out["train.error.sparsify"] and "train.ratio_to_sparsify" not in out
    else:
        assert out["train.ratio_to_sparsify"] > 0


def test_profile_names_the_operators_of_a_step():
    head, *rows = run_script("train_throughput.py", *SMALL, "--profile", "mmsae").strip().splitlines()
    assert head.startswith("mmsae: ") and "ms of operator self time per step (2 steps, 1 threads)" in head
    assert 0 < len(rows) <= 25 and any("aten::mm" in r for r in rows)  # the dense selection product is there
    ms = [float(r.split()[0]) for r in rows]
    assert ms == sorted(ms, reverse=True) and float(head.split()[1]) >= sum(ms)
