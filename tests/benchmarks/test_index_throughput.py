"""benchmarks/index_throughput.py: the FLOP bound next to the ratio it bounds."""

import pytest
from bench_run import run_benchmark


def test_index_reports_the_flop_bound():
    out = run_benchmark("index_throughput.py", "--records", "16", "--latents", "512", "--batch-size", "8",
                        "--chunk-records", "8", "--workers", "0", "--selection", "float32", "--repeats", "2")
    forward, encode = out["index.flops_forward_per_token"], out["index.flops_encode_per_token"]
    assert encode == 2 * 128 * 512
    assert forward > 2 * 4 * 128 * 128 * 4  # at least the 4 language blocks' q, k, v, o projections
    assert out["index.bound_ratio"] == pytest.approx(forward / (forward + encode))
    assert out["index.ratio_to_bound"] == pytest.approx(out["index.ratio_to_capture"] / out["index.bound_ratio"])
    assert out["index.selection_dtype"] == "float32"
    assert out["index.ratio_to_capture"] > 0 and "index.peak_rss_mb.16" in out
    # best of the alternating runs, each side
    assert len(out["index.capture_tokens_per_s_runs"]) == len(out["index.index_tokens_per_s_runs"]) == 2
    assert out["index.capture_tokens_per_s"] == max(out["index.capture_tokens_per_s_runs"])
    assert out["index.index_tokens_per_s"] == max(out["index.index_tokens_per_s_runs"])


def test_a_faster_selection_product_counts_at_its_rate():
    out = run_benchmark("index_throughput.py", "--records", "8", "--latents", "512", "--batch-size", "8",
                        "--chunk-records", "8", "--workers", "0", "--selection", "bfloat16", "--repeats", "1")
    forward, encode = out["index.flops_forward_per_token"], out["index.flops_encode_per_token"]
    worth = encode * out["index.gemm_gflops_float32"] / out["index.gemm_gflops_bfloat16"]
    assert out["index.selection_dtype"] == "bfloat16"
    assert out["index.bound_ratio"] == pytest.approx(forward / (forward + worth))
