"""`mmsae explain` over a hand-built feature index: rows, resume, failures, and the real HTTP path."""

import json
import os
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import duckdb  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from click.testing import CliRunner  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from index_fixture import concept_feature, world_index  # noqa: E402

from mmsae.explain import ExplainConfig, run_explain  # noqa: E402
from mmsae.llm import Completion, from_data_url  # noqa: E402
from mmsae.viz import masked_image  # noqa: E402
from mmsae.world import World  # noqa: E402

N, CONCEPTS = 20, {1: "red", 4: "house", 7: "car"}  # each in 6+ of the first 20 scenes


class FakeBackend:
    """Answers from a script: a string, a Completion, or an exception raised for the whole batch."""

    def __init__(self, *script, name="fake"):
        self.name, self.script, self.batches = name, list(script), []

    def complete_many(self, batch):
        self.batches.append(batch)
        out = []
        for _ in batch:
            item = self.script.pop(0) if len(self.script) > 1 else self.script[0]
            if isinstance(item, BaseException):
                raise item
            out.append(item if isinstance(item, Completion) else Completion(item))
        return out


@pytest.fixture
def index(tmp_path):
    maps = {f: concept_feature(0, N, c, top=6) for f, c in CONCEPTS.items()}
    return world_index(tmp_path / "idx", maps, n=N, text_only=(9,))


def rows(index, order="feature, prompt_version"):
    con = duckdb.connect(str(index / "index.duckdb"), read_only=True)
    try:
        return con.execute(f"SELECT feature, status, explanation, raw, reason, model, prompt_version, created "
                           f"FROM explanations ORDER BY {order}").fetchall()
    finally:
        con.close()


def cfg(index, **kw):
    return ExplainConfig(index=index, progress=False, **kw)


def test_rows_are_written_with_model_prompt_version_and_time(index):
    backend = FakeBackend("Red.")
    t0 = time.time()
    s = run_explain(cfg(index, chunk_size=2), backend)
    got = rows(index)
    assert [r[0] for r in got] == [1, 4, 7]  # alive features with top images; text-only 9 and dead ones skipped
    assert all(r[1:3] == ("explained", "red") and r[3] == "Red." for r in got)
    assert all(r[5:7] == ("fake", "paper-v1") and t0 <= r[7] <= time.time() for r in got)
    assert [len(b) for b in backend.batches] == [2, 1]  # chunks
    assert s["written"] == 3 and s["explained"] == 3 and s["table"]["explained"] == 3 and s["stopped"] is None
    # each request carries the 5 strongest top images, masked to the patches where the feature fires
    freq_order = [r[0] for r in duckdb.connect(str(index / "index.duckdb"), read_only=True).execute(
        "SELECT feature FROM features WHERE n_image_fires > 0 ORDER BY frequency DESC, feature").fetchall()]
    first = backend.batches[0][0]
    images = [from_data_url(p["image_url"]["url"]) for p in first[-1]["content"] if p["type"] == "image_url"]
    assert len(images) == 5
    sample, acts_GG = concept_feature(0, N, CONCEPTS[freq_order[0]], top=1)[0]
    r, c = np.divmod(np.arange(64), 8)
    boxes = np.stack([c * 8, r * 8, (c + 1) * 8, (r + 1) * 8], axis=1)
    want = masked_image(World()[sample].pil, boxes, acts_GG.ravel())
    assert np.array_equal(np.asarray(images[0]), np.asarray(want))
    assert (np.asarray(images[0])[np.repeat(np.repeat(acts_GG == 0, 8, 0), 8, 1)] == 0).all()


def test_rerun_skips_done_features_and_other_prompts_add_rows(index):
    run_explain(cfg(index), FakeBackend("red"))
    again = FakeBackend("blue")
    s = run_explain(cfg(index), again)
    assert again.batches == [] and s["skipped"] == 3 and s["written"] == 0
    assert {r[2] for r in rows(index)} == {"red"}
    run_explain(cfg(index, prompt="zoo-v1"), again)  # another prompt version is another explanation
    assert [(r[0], r[2], r[6]) for r in rows(index)] == [
        (1, "red", "paper-v1"), (1, "blue", "zoo-v1"), (4, "red", "paper-v1"), (4, "blue", "zoo-v1"),
        (7, "red", "paper-v1"), (7, "blue", "zoo-v1")]


def test_a_failing_backend_gives_failed_rows_and_the_run_goes_on(index):
    flaky = FakeBackend(RuntimeError("connection refused"), Completion(None, "HTTP 503: busy"), "house")
    s = run_explain(cfg(index, chunk_size=1, features=[1, 4, 7]), flaky)
    got = {r[0]: r for r in rows(index)}
    assert got[1][1] == "failed" and got[1][2] is None and "RuntimeError: connection refused" in got[1][4]
    assert got[4][1] == "failed" and got[4][2] is None and got[4][4] == "HTTP 503: busy"
    assert got[7][1:3] == ("explained", "house")
    assert (s["failed"], s["explained"], s["stopped"]) == (2, 1, None)
    # a plain rerun keeps the failures; --retry-failed asks only those again and replaces their rows
    good = FakeBackend("red")
    assert run_explain(cfg(index, features=[1, 4, 7]), good)["written"] == 0 and good.batches == []
    s = run_explain(cfg(index, features=[1, 4, 7], retry_failed=True), good)
    assert s["written"] == 2 and [len(b) for b in good.batches] == [2]
    got = rows(index)
    assert [(r[0], r[1]) for r in got] == [(1, "explained"), (4, "explained"), (7, "explained")]


def test_an_interrupted_run_resumes_without_duplicates(index):
    # chunk 2 is interrupted (as by Ctrl-C; kill -9 likewise never commits it): chunk 1 stays, the rerun
    # asks only the rest
    with pytest.raises(KeyboardInterrupt):
        run_explain(cfg(index, chunk_size=1), FakeBackend("red", KeyboardInterrupt()))
    assert len(rows(index)) == 1
    rest = FakeBackend("blue")
    s = run_explain(cfg(index, chunk_size=1), rest)
    assert (s["skipped"], s["written"], len(rest.batches)) == (1, 2, 2)
    assert sorted(r[0] for r in rows(index)) == [1, 4, 7]


def test_unparseable_answers_are_failed_never_explanations(index):
    s = run_explain(cfg(index, features=[1, 4, 7]), FakeBackend("red\nblue", "<unk> tree", "Unable to interpret."))
    got = {r[0]: r for r in rows(index)}
    assert got[1][1:4] == ("failed", None, "red\nblue") and "one line" in got[1][4]
    assert got[4][1:4] == ("failed", None, "<unk> tree") and "special tokens" in got[4][4]
    assert got[7][1:3] == ("uninterpretable", None)
    assert (s["failed"], s["uninterpretable"], s["explained"]) == (2, 1, 0)


def test_a_dead_backend_stops_after_failed_chunks_in_a_row(index):
    dead = FakeBackend(Completion(None, "ConnectError: [Errno 111] Connection refused"))
    s = run_explain(cfg(index, chunk_size=1, stop_after_failed_chunks=2), dead)
    assert len(dead.batches) == 2 and s["failed"] == 2 and "Connection refused" in s["stopped"]
    assert len(rows(index)) == 2


def test_selection_limits_and_bad_items(index, tmp_path):
    # a text-only feature asked by name fails with its reason; a record that is not the indexed one fails
    # its feature only
    con = duckdb.connect(str(index / "index.duckdb"))
    con.execute("UPDATE samples SET sample_id = 'moved' WHERE sample = "
                "(SELECT sample FROM examples WHERE feature = 7 AND rank = 0)")
    con.close()
    s = run_explain(cfg(index, features=[9, 7]), FakeBackend("red"))
    got = {r[0]: r for r in rows(index)}
    assert got[9][1] == "failed" and "no top images" in got[9][4]
    assert got[7][1] == "failed" and "'moved'" in got[7][4] and s["failed"] == 2
    s = run_explain(cfg(index, limit=2), FakeBackend("red"))
    assert s["selected"] == 2
    with pytest.raises(ValueError, match="features 99, 100 are not in the index"):
        run_explain(cfg(index, features=[1, 99, 100]), FakeBackend("red"))
    with pytest.raises(ValueError, match="needs --base-url and --model"):
        run_explain(cfg(index, backend="http"))  # no backend named: http with a base_url, else local
    bare = world_index(tmp_path / "bare", {2: concept_feature(0, N, "red", top=2)}, n=N, with_explanations=False)
    assert run_explain(cfg(bare), FakeBackend("red"))["table"]["explained"] == 1  # table created on demand


def test_end_to_end_with_the_zoo_explainer_served_over_http(tmp_path):
    from mmsae.cli import command
    from mmsae.llm import make_server
    from mmsae.zoo import model_dir

    concepts = {0: "red", 1: "grass", 2: "house"}
    index = world_index(tmp_path / "idx", {f: concept_feature(0, 40, c) for f, c in concepts.items()}, n=40,
                        n_latents=4)
    server = make_server(model_dir("explainer"), port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = "http://{}:{}/v1".format(*server.server_address[:2])
    try:
        s = run_explain(cfg(index, backend="http", base_url=url, model="explainer", features=[0, 1], concurrency=2))
        assert s["prompt_version"] == "zoo-v1" and s["model"] == "explainer" and s["failed"] == 0
        # the CLI over the same server explains the third feature and skips the two done ones
        result = CliRunner().invoke(command(), ["explain", "--index", str(index), "--base-url", url, "--model",
                                                "explainer", "--no-progress"])
        assert result.exit_code == 0, result.output
        assert "1 features asked (2 of 3 already done)" in result.output
        written = json.loads((index / "explain-config.json").read_text())  # the resolved config, in the index
        assert written["config"] == "ExplainConfig" and written["backend"] == "http" and written["base_url"] == url
    finally:
        server.shutdown()
        server.server_close()
    got = rows(index)
    assert [r[0] for r in got] == [0, 1, 2]
    assert all(r[1] != "failed" and r[5:7] == ("explainer", "zoo-v1") for r in got)
    named = {r[0]: r[2] for r in got}
    print("zoo explainer answers:", {concepts[f]: named[f] for f in named})
    assert sum(named[f] == c for f, c in concepts.items()) >= 2  # ideal features: the explainer names them


def test_cli_rejects_bad_input_with_a_clear_message(index):
    from mmsae.cli import command

    app = command()
    bad = CliRunner().invoke(app, ["explain", "--index", str(index), "--features", "1,x"])
    assert bad.exit_code == 2 and "features must be an integer, got 'x'" in bad.output
    no_url = CliRunner().invoke(app, ["explain", "--index", str(index), "--backend", "http", "--no-progress"])
    assert no_url.exit_code == 2 and "needs --base-url" in no_url.output
    missing = CliRunner().invoke(app, ["explain", "--index", str(index / "nope"), "--no-progress"])
    assert missing.exit_code == 2 and "no feature index" in missing.output
