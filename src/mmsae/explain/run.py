"""`mmsae explain` as a Python API: explain the features of an index and store the answers in it.

For every selected feature the top images are masked (only the patches where the feature fires stay
visible, as in Multimodal-SAE), sent to an explainer backend in chunks, parsed strictly, and written to
the index's `explanations` table in one transaction per chunk. A rerun skips the features that already
have a row for this (model, prompt version), so a killed run resumes losing at most one chunk.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from ..index.read import (
    example_image,
    feature_examples_many,
    index_file,
    index_source,
    open_index,
    read_meta,
    require_features,
    top_features,
)
from ..index.results import explained_features, explanation_counts
from ..index.write import EXPLANATION_STATUSES, ExplanationRow, write_explanations
from ..llm import HTTPChat, HTTPChatConfig, LocalChat
from ..viz.maps import masked_image
from . import explain
from .prompt import PromptTemplate

BACKENDS = ("http", "local")
ZOO_SERVED_NAME = "explainer"  # the name `mmsae serve-explainer` gives the zoo explainer by default


@dataclass
class ExplainConfig:
    """Explain features from their masked top images; answers go to the index's explanations table.

    Rerunning skips features already explained by this model and prompt version (resume after a kill)."""

    index: Path
    """feature index directory (holds index.duckdb)"""
    features: list[int] | None = None
    """feature ids, e.g. 1,2,7-9 (None: every alive feature with top images, most frequent first)"""
    limit: int | None = None
    """explain at most N of the selected features"""
    backend: str | None = None
    """http (an OpenAI-compatible server) | local (an HF LMM in this process); None: http when base_url is
    given, else local"""
    base_url: str | None = None
    """http: the OpenAI-compatible endpoint, e.g. http://127.0.0.1:8008/v1"""
    model: str | None = None
    """http: the model name the server serves"""
    api_key_env: str = "OPENAI_API_KEY"
    """http: the environment variable holding the API key (the key is never stored or logged)"""
    concurrency: int = 8
    """http: requests in flight"""
    timeout_s: float = 120.0
    """http: seconds per request"""
    retries: int = 4
    """http: retries per request (exponential backoff)"""
    max_tokens: int = 64
    """tokens the explainer may answer with"""
    model_path: Path | None = None
    """local: HF model directory (None: the zoo explainer)"""
    prompt: str | None = None
    """template name or JSON file (None: zoo-v1 for the zoo explainer, else paper-v1)"""
    n_images: int = 5
    """masked top images per feature (the paper uses 5)"""
    mask_threshold: float = 0.0
    """activation above which a patch stays visible"""
    mask_relative: bool = False
    """read mask_threshold as a fraction of each image's peak activation"""
    max_side: int | None = 1024
    """larger masked images are scaled down to this side before they are sent"""
    chunk_size: int = 32
    """features per backend batch and per transaction"""
    retry_failed: bool = False
    """ask again the features whose stored row failed"""
    source: str | None = None
    """data source spec replacing the index's meta.data (e.g. the images moved)"""
    cache: bool = True
    """http: keep answers under <index>/explain-cache (a killed chunk is not asked again)"""
    stop_after_failed_chunks: int | None = 3
    """stop when this many chunks in a row fail on every request (None: never stop)"""
    progress: bool = True
    """show a progress bar"""

    def validate(self, has_backend: bool = False) -> None:
        self.index = Path(self.index)
        if self.backend is None:  # an injected backend object is named by `model`, as an http one is
            self.backend = "http" if self.base_url or has_backend else "local"
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}; choose one of {', '.join(BACKENDS)}")
        if self.backend == "http" and not has_backend and not (self.base_url and self.model):
            raise ValueError("the http backend needs --base-url and --model (or use --backend local)")
        for name in ("n_images", "chunk_size", "concurrency", "max_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1; got {getattr(self, name)}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1; got {self.limit}")
        if self.features is not None and not self.features:
            raise ValueError("an empty feature list; leave features out to explain every alive feature")
        if self.mask_relative and not 0.0 <= self.mask_threshold < 1.0:
            raise ValueError(f"a relative mask threshold is a fraction in [0, 1); got {self.mask_threshold}")
        if self.retries < 0 or self.timeout_s <= 0:
            raise ValueError("retries must be >= 0 and timeout_s > 0")


def _zoo_explainer() -> Path | None:
    from ..defaults import zoo_model_dir as model_dir

    try:
        return model_dir("explainer")
    except FileNotFoundError:
        return None


def default_prompt(cfg: ExplainConfig) -> str:
    """The template a config asks for: its own, else zoo-v1 (the zoo explainer was trained on it), else paper-v1."""
    if cfg.prompt:
        return cfg.prompt
    if cfg.backend == "local":
        zoo = _zoo_explainer()
        path = cfg.model_path or zoo
        return "zoo-v1" if zoo is not None and path is not None and Path(path).resolve() == zoo.resolve() else "paper-v1"
    return "zoo-v1" if cfg.model == ZOO_SERVED_NAME else "paper-v1"


def make_backend(cfg: ExplainConfig):
    """The backend a config describes (HTTP client or local HF LMM)."""
    if cfg.backend == "http":
        return HTTPChat(HTTPChatConfig(
            cfg.base_url, cfg.model, api_key_env=cfg.api_key_env, max_concurrency=cfg.concurrency,
            timeout_s=cfg.timeout_s, retries=cfg.retries, max_tokens=cfg.max_tokens,
            cache_dir=Path(cfg.index) / "explain-cache" if cfg.cache else None))
    path = cfg.model_path or _zoo_explainer()
    if path is None:
        raise FileNotFoundError("no --model-path given and the zoo explainer is not installed")
    if not (Path(path) / "config.json").exists():
        raise FileNotFoundError(f"no Hugging Face model at {path} (config.json missing)")
    return LocalChat(path, max_tokens=cfg.max_tokens)


def select_features(con, cfg: ExplainConfig) -> list[int]:
    """The features to explain, in order: the given ones (all must exist in the index), else every alive
    feature that has top images, most frequent first; `limit` keeps the first ones."""
    if cfg.features is not None:
        wanted = list(dict.fromkeys(int(f) for f in cfg.features))
        require_features(con, wanted)
        return wanted[: cfg.limit] if cfg.limit else wanted
    return [s.feature for s in top_features(con, min_fires=1, min_examples=1, order_by="frequency", limit=cfg.limit)]


def _shrink(image: Image.Image, max_side: int | None) -> Image.Image:
    if max_side is None or max(image.size) <= max_side:
        return image
    s = max_side / max(image.size)
    return image.resize((max(1, round(image.width * s)), max(1, round(image.height * s))), Image.BILINEAR)


class _Chunk:
    """One chunk: masked image sets for the features that have them, failures for the rest."""

    def __init__(self, con, source, features: list[int], cfg: ExplainConfig, model: str, version: str):
        self.asked: list[int] = []
        self.image_sets: list[list[Image.Image]] = []
        self.failed: list[ExplanationRow] = []
        problems: dict[int, str] = {}
        tops = feature_examples_many(con, features, cfg.n_images, problems)
        for f in features:
            if f in problems:
                self._fail(f, f"index: {problems[f]}", model, version)
            elif not tops[f]:
                self._fail(f, "no top images in the index (the feature fires on no image token)", model, version)
            else:
                try:
                    ims = [_shrink(masked_image(example_image(source, e), e.box, e.acts, cfg.mask_threshold,
                                                cfg.mask_relative), cfg.max_side) for e in tops[f]]
                except Exception as err:  # a missing/unreadable record fails this feature only
                    self._fail(f, f"images: {type(err).__name__}: {err}", model, version)
                    continue
                self.asked.append(f)
                self.image_sets.append(ims)

    def _fail(self, feature: int, reason: str, model: str, version: str) -> None:
        self.failed.append(ExplanationRow(feature, "failed", None, None, reason, model, version, time.time()))


def _ask(chunk: _Chunk, backend, template: PromptTemplate) -> tuple[list[ExplanationRow], bool]:
    """The chunk's explanations, and whether every request failed at the backend (not at parsing)."""
    if not chunk.asked:
        return [], False
    try:
        out = explain(chunk.asked, chunk.image_sets, backend, template)
        if len(out) != len(chunk.asked):
            raise RuntimeError(f"the backend answered {len(out)} of {len(chunk.asked)} requests")
    except Exception as err:  # a backend that raises fails its chunk; the run goes on
        reason = f"backend: {type(err).__name__}: {err}"
        now = time.time()
        return [ExplanationRow(f, "failed", None, None, reason, backend.name, template.version, now)
                for f in chunk.asked], True
    all_failed = all(e.status == "failed" and e.raw is None for e in out)
    return out, all_failed


def _progress(enabled: bool):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("explain"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    TextColumn("{task.fields[rate]} features/min"), TextColumn("{task.fields[counts]}"),
                    console=Console(stderr=True), disable=not enabled)


def run_explain(cfg: ExplainConfig, backend=None) -> dict:
    """Explain the selected features of an index; returns a summary (counts of this run and of the table).

    `backend` may be any object with `name` and `complete_many(list_of_messages) -> list[Completion]`;
    by default the config's HTTP or local backend is built (and closed at the end)."""
    from ..io import write_config

    cfg.validate(has_backend=backend is not None)
    template = PromptTemplate.load(default_prompt(cfg))
    con = open_index(cfg.index, read_only=False)
    write_config(index_file(cfg.index).parent, cfg, "explain-config.json")  # beside what it writes into
    own_backend = backend is None
    t0 = time.perf_counter()
    counts = dict.fromkeys(EXPLANATION_STATUSES, 0)
    stopped = None
    try:
        selected = select_features(con, cfg)
        source = index_source(read_meta(con), cfg.source)
        if own_backend:
            backend = make_backend(cfg)
        done = explained_features(con, backend.name, template.version, include_failed=not cfg.retry_failed)
        todo = [f for f in selected if f not in done]
        failed_in_a_row = 0
        with _progress(cfg.progress) as bar:
            task = bar.add_task("features", total=len(todo), rate="-", counts="")
            for k in range(0, len(todo), cfg.chunk_size):
                chunk = _Chunk(con, source, todo[k : k + cfg.chunk_size], cfg, backend.name, template.version)
                answers, backend_down = _ask(chunk, backend, template)
                rows = chunk.failed + answers
                write_explanations(con, rows)
                for r in rows:
                    counts[r.status] += 1
                minutes = (time.perf_counter() - t0) / 60
                bar.update(task, advance=len(rows), rate=f"{sum(counts.values()) / max(minutes, 1e-9):,.1f}",
                           counts=" ".join(f"{s} {n}" for s, n in counts.items()))
                failed_in_a_row = failed_in_a_row + 1 if backend_down else 0
                if cfg.stop_after_failed_chunks and failed_in_a_row >= cfg.stop_after_failed_chunks:
                    stopped = (f"{failed_in_a_row} chunks in a row failed on every request (last reason: "
                               f"{answers[-1].reason}); rerun with --retry-failed once the backend answers")
                    break
        table = explanation_counts(con, backend.name, template.version)
    finally:
        con.close()
        if own_backend and backend is not None and hasattr(backend, "close"):
            backend.close()
    elapsed = time.perf_counter() - t0
    n = sum(counts.values())
    return {"index": str(cfg.index), "model": backend.name, "prompt_version": template.version,
            "selected": len(selected), "skipped": len(selected) - len(todo), "written": n, **counts,
            "stopped": stopped, "elapsed_s": round(elapsed, 3),
            "features_per_min": round(n / (elapsed / 60), 1) if elapsed > 0 and n else 0.0,
            "table": table}


def format_explain(s: dict, cfg: ExplainConfig) -> tuple[str, int]:
    """The run's counts for people; exit code 1 when the run stopped on a dead backend."""
    text = (f"{s['written']} features asked ({s['skipped']} of {s['selected']} already done) with {s['model']} / "
            f"{s['prompt_version']}: explained {s['explained']}, uninterpretable {s['uninterpretable']}, "
            f"failed {s['failed']}  ({s['features_per_min']} features/min)\n"
            f"  in the index for this model and prompt: " + ", ".join(f"{k} {v}" for k, v in s["table"].items()))
    if s["stopped"]:
        return text + f"\nstopped: {s['stopped']}", 1
    return text, 0
