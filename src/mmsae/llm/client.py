"""Chat backends: any OpenAI-compatible server over HTTP, or a local HF LMM in-process.

Both answer a batch of chats with `complete_many` and never raise for one bad item: each completion
carries its text or its error, so a run goes on and failures are recorded.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx

from ..io import write_atomic


@dataclass(frozen=True)
class Completion:
    text: str | None
    error: str | None = None
    cached: bool = False
    attempts: int = 0


@dataclass(frozen=True)
class HTTPChatConfig:
    base_url: str  # e.g. http://127.0.0.1:8000/v1 (vLLM, SGLang, Ollama, OpenAI)
    model: str
    api_key_env: str = "OPENAI_API_KEY"  # the key is read from this variable and never logged
    max_concurrency: int = 8
    timeout_s: float = 120.0
    retries: int = 4
    backoff_s: float = 0.5
    max_tokens: int = 64
    temperature: float = 0.0
    cache_dir: Path | None = None


class HTTPChat:
    def __init__(self, cfg: HTTPChatConfig):
        self.cfg = cfg
        self.name = cfg.model
        key = os.environ.get(cfg.api_key_env)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._client = httpx.Client(base_url=cfg.base_url.rstrip("/"), headers=headers, timeout=cfg.timeout_s)

    def _key(self, messages: list[dict]) -> str:
        payload = {"model": self.cfg.model, "messages": messages, "max_tokens": self.cfg.max_tokens,
                   "temperature": self.cfg.temperature}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def complete(self, messages: list[dict]) -> Completion:
        key = self._key(messages)
        cache = self.cfg.cache_dir / f"{key}.json" if self.cfg.cache_dir else None
        if cache is not None and cache.exists():
            return Completion(json.loads(cache.read_text())["text"], cached=True)
        body = {"model": self.cfg.model, "messages": messages, "max_tokens": self.cfg.max_tokens,
                "temperature": self.cfg.temperature}
        error = None
        for attempt in range(1, self.cfg.retries + 2):
            try:
                resp = self._client.post("/chat/completions", json=body)
                if resp.status_code == 200:
                    text = resp.json()["choices"][0]["message"]["content"]
                    if cache is not None:
                        write_atomic(cache, json.dumps({"text": text}))
                    return Completion(text, attempts=attempt)
                error = f"HTTP {resp.status_code}: {_error_message(resp)}"
                if resp.status_code < 500 and resp.status_code != 429:
                    return Completion(None, error, attempts=attempt)  # our request is wrong: retrying won't help
            except (httpx.HTTPError, ValueError, KeyError, IndexError) as err:
                error = f"{type(err).__name__}: {err}"
            if attempt <= self.cfg.retries:
                time.sleep(self.cfg.backoff_s * 2 ** (attempt - 1))
        return Completion(None, error, attempts=self.cfg.retries + 1)

    def complete_many(self, batch: list[list[dict]]) -> list[Completion]:
        with ThreadPoolExecutor(max_workers=self.cfg.max_concurrency) as pool:
            return list(pool.map(self.complete, batch))

    def close(self) -> None:
        self._client.close()


def _error_message(resp: httpx.Response) -> str:
    try:
        return str(resp.json()["error"]["message"])[:300]
    except (ValueError, KeyError, TypeError):
        return resp.text[:300]


class LocalChat:
    """A local HF LMM run in-process with `generate`."""

    def __init__(self, model_path: str | Path, max_tokens: int = 32):
        from .hf_chat import HFChatModel

        self.engine = HFChatModel(model_path, max_new_tokens=max_tokens)
        self.name = Path(model_path).name

    def complete_many(self, batch: list[list[dict]]) -> list[Completion]:
        out = []
        for messages in batch:
            try:
                out.append(Completion(self.engine.complete(messages)[0], attempts=1))
            except Exception as err:  # one bad request must not end the run: it is recorded
                out.append(Completion(None, f"{type(err).__name__}: {err}", attempts=1))
        return out
