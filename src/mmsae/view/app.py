"""`mmsae view`: the viewer's config, the Starlette app and the server.

    from mmsae.view.app import ViewConfig, build_app, run_view
    run_view(ViewConfig(index="out/index-layer3"))  # prints http://127.0.0.1:8765/?token=...

Loopback only by default (another host needs allow_remote, and warns); the Host header must name an
allowed host (DNS rebinding); endpoints that run the model need the per-launch token, which the start-up
URL carries and which is then kept in a SameSite=Strict cookie."""

from __future__ import annotations

import logging
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path

from .security import LOOPBACK_HOSTS, is_loopback

log = logging.getLogger("mmsae.view")


@dataclass
class ViewConfig:
    index: str
    """the feature index directory (or its index.duckdb); opened read-only"""
    model: str | None = None
    """the model for the image page (default: the index's model, when it exists here)"""
    sae: str | None = None
    """the SAE for the image page and decoder-cosine neighbours (default: the index's SAE, when it exists)"""
    host: str = "127.0.0.1"
    """address to bind; anything but loopback needs --allow-remote"""
    port: int = 8765
    """port to bind (0: any free port)"""
    allow_remote: bool = False
    """allow binding a non-loopback address (the viewer has no user accounts: anyone who can reach it sees the index)"""
    allowed_hosts: tuple[str, ...] = ()
    """Host header values accepted besides localhost, 127.0.0.1 and [::1] (needed with --allow-remote)"""
    max_jobs: int = 1
    """model jobs that run at once"""
    max_queue: int = 4
    """model jobs that may wait; more get 'busy' (503)"""
    max_upload_bytes: int = 8 * 2**20
    """largest accepted upload in bytes"""
    max_upload_pixels: int = 4096 * 4096
    """largest accepted upload in pixels (decompression-bomb limit)"""
    data: str | None = None
    """the indexed data source spec, when it moved (default: the index meta's)"""
    token: str | None = None
    """the launch token (default: a fresh random one per launch)"""
    device: str | None = None
    """device for the model (default: mmsae.util.pick_device)"""

    def __post_init__(self):
        if not Path(self.index).exists():
            raise FileNotFoundError(f"index must be an existing feature index, got {self.index!r}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {self.port!r}")
        for name in ("max_jobs", "max_upload_bytes", "max_upload_pixels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.max_queue < 0:
            raise ValueError(f"max_queue must be >= 0, got {self.max_queue!r}")
        if not is_loopback(self.host) and not self.allow_remote:
            raise ValueError(f"host {self.host!r} is not a loopback address: binding it exposes the viewer to "
                             f"the network; pass allow_remote=True (--allow-remote) if you mean it")
        if self.token is not None and len(self.token) < 8:
            raise ValueError(f"token must be at least 8 characters, got {len(self.token)}")
        self.allowed_hosts = tuple(self.allowed_hosts)


def build_app(cfg: ViewConfig):
    """The Starlette app over cfg.index (its launch token is app.state.token)."""
    from .pages import make_app

    token = cfg.token or secrets.token_urlsafe(24)
    return make_app(cfg, token, LOOPBACK_HOSTS + tuple(h.lower() for h in cfg.allowed_hosts))


def launch_url(cfg: ViewConfig, port: int, token: str) -> str:
    host = "localhost" if is_loopback(cfg.host) else cfg.host
    host = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"http://{host}:{port}/?token={token}"


def run_view(cfg: ViewConfig) -> dict:
    """Serve the viewer until interrupted; prints the URL with the launch token."""
    import uvicorn

    if not is_loopback(cfg.host):
        print(f"warning: binding {cfg.host}: the viewer is reachable from the network; it has no user "
              f"accounts, only the launch token guards its model endpoints", file=sys.stderr)
    app = build_app(cfg)
    server = uvicorn.Server(uvicorn.Config(app, host=cfg.host.strip("[]"), port=cfg.port, log_level="warning",
                                           access_log=False, server_header=False))
    original_startup = server.startup

    async def startup(sockets=None):
        await original_startup(sockets)
        port = cfg.port
        for s in server.servers:
            for sock in s.sockets:
                port = sock.getsockname()[1]
        print(f"mmsae view: {launch_url(cfg, port, app.state.token)}", flush=True)

    server.startup = startup
    server.run()
    return {"index": str(cfg.index), "host": cfg.host, "port": cfg.port}
