"""`mmsae serve-explainer` (a local HF LMM behind the OpenAI API) and `mmsae explain` (explain an index's features)."""

from __future__ import annotations

from pathlib import Path

import typer


def serve_explainer_command(
    model: Path = typer.Option(None, help="HF model directory (default: the zoo's explainer)"),
    host: str = typer.Option("127.0.0.1", help="bind address (loopback by default)"),
    port: int = typer.Option(8008, help="port (0 picks a free one)"),
    name: str = typer.Option(None, help="model name clients must ask for (default: the folder's name)"),
) -> None:
    """Expose a local HF LMM as an OpenAI-compatible /v1/chat/completions endpoint."""
    from ..defaults import zoo_model_dir as model_dir
    from ..llm import make_server

    path = model or model_dir("explainer")
    if not (Path(path) / "config.json").exists():
        typer.echo(f"error: no Hugging Face model at {path} (config.json missing)", err=True)
        raise typer.Exit(2)
    server = make_server(path, host, port, name)
    h, p = server.server_address[:2]
    typer.echo(f"serving {path} as {name or Path(path).name!r} on http://{h}:{p}/v1", err=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def parse_features(text: str) -> list[int]:
    """'1,2,7-9' -> [1, 2, 7, 8, 9]; a clear error naming the bad item."""
    out: list[int] = []
    for item in filter(None, (t.strip() for t in text.split(","))):
        lo, dash, hi = item.partition("-")
        try:
            if dash:
                a, b = int(lo), int(hi)
                if b < a:
                    raise ValueError
                out.extend(range(a, b + 1))
            else:
                out.append(int(item))
        except ValueError:
            raise typer.BadParameter(f"{item!r} is not a feature id or a range like 7-9", param_hint="--features") from None
    if not out:
        raise typer.BadParameter("no feature ids given", param_hint="--features")
    return out


def explain_command(
    index: Path = typer.Option(..., "--index", help="feature index directory (holds index.duckdb)"),
    backend: str = typer.Option(None, help="http | local (default: http with --base-url, else local)"),
    base_url: str = typer.Option(None, "--base-url", help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8008/v1"),
    model: str = typer.Option(None, "--model", help="http: the model name the server serves"),
    api_key_env: str = typer.Option("OPENAI_API_KEY", help="http: environment variable holding the API key"),
    model_path: Path = typer.Option(None, "--model-path", help="local: HF model directory (default: the zoo explainer)"),
    features: str = typer.Option(None, help="feature ids, e.g. 1,2,7-9 (default: all alive, most frequent first)"),
    limit: int = typer.Option(None, help="explain at most N of the selected features"),
    prompt: str = typer.Option(None, help="template name or JSON file (default: zoo-v1 for the zoo explainer, else paper-v1)"),
    concurrency: int = typer.Option(8, help="http: requests in flight"),
    images: int = typer.Option(5, help="masked top images per feature"),
    threshold: float = typer.Option(0.0, help="activation above which a patch stays visible"),
    relative: bool = typer.Option(False, help="read --threshold as a fraction of each image's peak"),
    timeout: float = typer.Option(120.0, help="http: seconds per request"),
    retries: int = typer.Option(4, help="http: retries per request (exponential backoff)"),
    chunk_size: int = typer.Option(32, help="features per batch and per transaction"),
    retry_failed: bool = typer.Option(False, help="ask again the features whose stored row failed"),
    source: str = typer.Option(None, help="data source spec replacing the index's (e.g. the images moved)"),
    progress: bool = typer.Option(True, help="show a progress bar"),
) -> None:
    """Explain features from their masked top images; answers go to the index's explanations table.

    Rerunning skips features already explained by this model and prompt version (resume after a kill)."""
    from rich.console import Console

    from ..data import Reject
    from .run import ExplainConfig, run_explain

    console = Console(stderr=True)
    cfg = ExplainConfig(
        index=index, features=parse_features(features) if features else None, limit=limit,
        backend=backend or ("http" if base_url else "local"), base_url=base_url, model=model,
        api_key_env=api_key_env, model_path=model_path, prompt=prompt, concurrency=concurrency,
        n_images=images, mask_threshold=threshold, mask_relative=relative, timeout_s=timeout, retries=retries,
        chunk_size=chunk_size, retry_failed=retry_failed, source=source, progress=progress)
    try:
        s = run_explain(cfg)
    except (ValueError, FileNotFoundError, Reject) as err:
        console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(2) from None
    console.print(
        f"{s['written']} features asked ({s['skipped']} of {s['selected']} already done) with {s['model']} / "
        f"{s['prompt_version']}: explained {s['explained']}, uninterpretable {s['uninterpretable']}, "
        f"failed {s['failed']}  ({s['features_per_min']} features/min)\n"
        f"  in the index for this model and prompt: " + ", ".join(f"{k} {v}" for k, v in s["table"].items()))
    if s["stopped"]:
        console.print(f"[yellow]stopped:[/yellow] {s['stopped']}")
        raise typer.Exit(1)
