"""Chat plumbing shared by explain and score: an OpenAI-compatible HTTP client, a local HF chat model, and an
OpenAI-compatible server over a local model.

Every backend answers a batch of chats with `complete_many(list_of_messages) -> list[Completion]` and never
raises for one bad chat: each completion carries its text or its error.

May import (the layers of pyproject.toml's importlinter contract): index, train, evals, sae, store, models,
data, world, viz, io, util, defaults.
"""

from .client import Completion, HTTPChat, HTTPChatConfig, LocalChat
from .hf_chat import HFChatModel, to_hf_messages
from .messages import from_data_url, image_part, to_data_url
from .server import make_server

__all__ = ["Completion", "HTTPChat", "HTTPChatConfig", "LocalChat", "HFChatModel", "to_hf_messages",
           "make_server", "to_data_url", "from_data_url", "image_part"]
