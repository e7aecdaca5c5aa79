"""A local HF LMM behind an OpenAI-compatible /v1/chat/completions endpoint (what `mmsae serve-explainer` runs)."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from .hf_chat import HFChatModel


def make_server(model_path: str | Path, host: str = "127.0.0.1", port: int = 8008, name: str | None = None) -> ThreadingHTTPServer:
    """A ready server (call serve_forever); port 0 picks a free port (see server.server_address)."""
    engine = HFChatModel(model_path)
    model_name = name or Path(model_path).name

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):  # requests may carry keys in headers: never log them
            pass

        def _send(self, code: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, code: int, message: str, kind: str = "invalid_request_error") -> None:
            self._send(code, {"error": {"message": message, "type": kind}})

        def do_GET(self):
            if self.path.rstrip("/") in ("/v1/models", "/models"):
                self._send(200, {"object": "list", "data": [{"id": model_name, "object": "model", "owned_by": "mmsae"}]})
            elif self.path.rstrip("/") == "/health":
                self._send(200, {"status": "ok"})
            else:
                self._error(404, f"no route {self.path}", "not_found")

        def do_POST(self):
            if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
                return self._error(404, f"no route {self.path}", "not_found")
            try:
                length = int(self.headers.get("Content-Length", 0))
                req = json.loads(self.rfile.read(length) or b"{}")
                if req.get("model") not in (None, model_name):
                    return self._error(404, f"model {req.get('model')!r} is not served here (serving {model_name!r})", "not_found")
                text, n_prompt, n_out = engine.complete(req.get("messages"), req.get("max_tokens"))
            except (ValueError, KeyError, TypeError, json.JSONDecodeError) as err:
                return self._error(400, f"bad request: {err}")
            except Exception as err:  # the model failed: report it as a server error, keep serving
                return self._error(500, f"generation failed: {type(err).__name__}: {err}", "server_error")
            self._send(200, {
                "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
                "model": model_name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": n_prompt, "completion_tokens": n_out, "total_tokens": n_prompt + n_out},
            })

    return ThreadingHTTPServer((host, port), Handler)


@dataclass
class ServeConfig:
    """Expose a local HF LMM as an OpenAI-compatible /v1/chat/completions endpoint (until Ctrl-C)."""

    model: Path | None = None
    """HF model directory (None: the zoo's explainer)"""
    host: str = "127.0.0.1"
    """bind address (loopback by default)"""
    port: int = 8008
    """port (0 picks a free one)"""
    name: str | None = None
    """the model name clients must ask for (None: the folder's name)"""

    def __post_init__(self):
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in [0, 65535], got {self.port!r}")


def run_serve(cfg: ServeConfig) -> dict:
    """Serve until interrupted; returns what was served and where."""
    import sys

    from mmsae.defaults import zoo_model_dir

    path = Path(cfg.model) if cfg.model is not None else zoo_model_dir("explainer")
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"no Hugging Face model at {path} (config.json missing)")
    server = make_server(path, cfg.host, cfg.port, cfg.name)
    host, port = server.server_address[:2]
    name = cfg.name or path.name
    print(f"serving {path} as {name!r} on http://{host}:{port}/v1", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return {"model": str(path), "name": name, "url": f"http://{host}:{port}/v1"}
