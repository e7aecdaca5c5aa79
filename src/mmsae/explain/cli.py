"""`mmsae serve-explainer`: serve a local HF LMM (default: the zoo's explainer) over the OpenAI API."""

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
    from ..zoo import model_dir
    from .server import make_server

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
