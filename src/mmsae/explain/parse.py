"""Strict parsing of explainer answers: an explanation, an explicit 'unable', or a recorded failure."""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_WORDS = 16
UNABLE = re.compile(r"\bunable to interpret\b", re.IGNORECASE)
PREFIX = re.compile(r"^\s*(explanation|pattern|answer|common pattern)\s*:\s*", re.IGNORECASE)


@dataclass(frozen=True)
class Parsed:
    status: str  # "explained" | "uninterpretable" | "failed"
    explanation: str | None
    reason: str | None = None


def parse_answer(text: str | None) -> Parsed:
    if text is None or not text.strip():
        return Parsed("failed", None, "empty answer")
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if UNABLE.search(text):
        return Parsed("uninterpretable", None)
    if len(lines) != 1:
        return Parsed("failed", None, f"expected one line, got {len(lines)}")
    phrase = PREFIX.sub("", lines[0]).strip().strip("\"'").rstrip(" .").strip()
    if not phrase:
        return Parsed("failed", None, "empty explanation")
    if "<unk>" in phrase or "<" in phrase and ">" in phrase:
        return Parsed("failed", None, "answer contains special tokens")
    if len(phrase.split()) > MAX_WORDS:
        return Parsed("failed", None, f"explanation longer than {MAX_WORDS} words")
    return Parsed("explained", phrase.lower())
