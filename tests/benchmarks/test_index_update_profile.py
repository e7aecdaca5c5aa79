"""benchmarks/index_update_profile.py: the update's parts, each within the whole it belongs to."""

from bench_run import run_benchmark


def test_profile_parts_add_up_within_their_wholes():
    out = run_benchmark("index_update_profile.py", "--records", "8", "--latents", "512", "--repeats", "5")
    p = {k.removeprefix("profile."): v for k, v in out.items()}
    assert p["tokens"] > 8 and p["threads"] == 1
    assert p["selection_dtype"] in ("bfloat16", "float32", "int8")
    for name in ("capture", "encode", "add_batch"):
        assert p[f"{name}_us_per_token"] > 0
    # the encode is one part of the update; its product and candidate search are parts of the encode
    # (best-of-5 timings of tiny work: a generous slack for scheduling noise)
    assert p["encode_us_per_token"] < 1.5 * p["add_batch_us_per_token"]
    if p["selection_dtype"] != "int8":
        assert p["product_us_per_token"] + p["candidates_us_per_token"] < 1.5 * p["encode_us_per_token"]
