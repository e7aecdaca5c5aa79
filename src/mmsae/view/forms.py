"""Reading the model pages' forms: the image (an upload or an indexed image), the prompt, and the playground's
fields, each checked with an error that names the field, the value and the valid range (shown to the user)."""

from __future__ import annotations

import base64
import math

from ..steer.interventions import TOKEN_SETS
from ..steer.run import MODES as STEER_MODES
from .data import png
from .security import UploadError, decode_upload

PROMPT_LIMIT = 2000
MAX_FEATURES = 8  # steered at once: each adds a decoder row per steered token, and the page shows each one
MAX_NEW_TOKENS = 64  # per generation: both answers are generated under the one model lock
MAX_VALUE = 1e4  # |value|: far past any code an SAE produces; beyond it the residual stream overflows to inf
MODES = tuple(STEER_MODES)  # clamp, add, scale: steer's own names, as TOKEN_SETS is its token sets


async def read_image(form, view, cfg, required: bool = True):
    """(PIL image, URL to show it) from the form's 'image' upload or its 'sample' ('record:image_index');
    (None, None) when neither is given and the image is optional."""
    upload = form.get("image")
    if upload is not None and not isinstance(upload, str):
        data = await upload.read()
        if data or required:
            image = decode_upload(data, cfg.max_upload_bytes, cfg.max_upload_pixels)
            return image, "data:image/png;base64," + base64.b64encode(png(image)).decode()
    if form.get("sample") not in (None, ""):
        try:
            sample, image_index = (int(v) for v in str(form["sample"]).split(":", 1))
        except ValueError:
            raise UploadError(f"sample must be 'record:image_index', e.g. '3:0', got {str(form['sample'])[:40]!r}") \
                from None
        import anyio.to_thread

        image = await anyio.to_thread.run_sync(view.record_image, sample, image_index)
        return image, f"/record/{sample}/{image_index}.png"
    if required:
        raise UploadError("send an image file (field 'image') or an indexed image (field 'sample')")
    return None, None


def read_prompt(form, default: str, image) -> str:
    """The prompt as the model reads it: the index's template placeholders dropped, and '<image>' first when
    there is an image and the prompt does not place it."""
    prompt = str(form.get("prompt") or default or "")[:PROMPT_LIMIT]
    prompt = prompt.replace("{caption}", "").replace("{text}", "")
    if image is not None and "<image>" not in prompt:
        prompt = "<image>" + prompt
    if image is None:
        prompt = prompt.replace("<image>", "")
    if not prompt.strip():
        raise ValueError("prompt is empty: give some text (with an image, '<image>' alone is enough)")
    return prompt


def parse_features(text: str, n_latents: int | None) -> list[int]:
    """'3, 7,12' or '3-5' -> [3, 7, 12] / [3, 4, 5]: at most MAX_FEATURES ids, each in 0..n_latents-1."""
    ids: list[int] = []
    for part in str(text or "").replace(" ", "").split(","):
        if not part:
            continue
        try:
            if "-" in part[1:]:
                a, b = part.split("-", 1) if part[0] != "-" else (part, "")
                lo, hi = int(a), int(b)
                if hi < lo:
                    raise ValueError
                if hi - lo >= MAX_FEATURES:
                    raise OverflowError
                ids.extend(range(lo, hi + 1))
            else:
                ids.append(int(part))
        except OverflowError:
            raise ValueError(f"features: the range {part!r} names more than {MAX_FEATURES} features") from None
        except ValueError:
            raise ValueError(f"features must be feature ids separated by commas (e.g. '3, 7' or '3-5'), "
                             f"got {part!r}") from None
    if not ids:
        raise ValueError("features is empty: name at least one feature id, e.g. '3' or '3, 7'")
    ids = list(dict.fromkeys(ids))
    if len(ids) > MAX_FEATURES:
        raise ValueError(f"features names {len(ids)} features; the playground steers at most {MAX_FEATURES} at once")
    for f in ids:
        if f < 0 or (n_latents is not None and f >= n_latents):
            valid = f"0..{n_latents - 1}" if n_latents is not None else ">= 0"
            raise ValueError(f"feature {f} is out of range: valid features are {valid}")
    return ids


def parse_choice(form, name: str, choices: tuple[str, ...], default: str) -> str:
    value = str(form.get(name) or default)
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value[:40]!r}")
    return value


def _field(form, name: str, convert, what: str):
    """The field as `convert` reads it, None when absent or empty; a ValueError naming the field and its value
    (cut to 40 characters) when it is not `what`."""
    raw = form.get(name)
    if raw in (None, ""):
        return None
    try:
        return convert(str(raw))
    except ValueError:
        raise ValueError(f"{name} must be {what}, got {str(raw)[:40]!r}") from None


def parse_number(form, name: str, default: float) -> float:
    value = _field(form, name, float, "a number")
    if value is None:
        return default
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {str(form.get(name))[:40]!r}")
    if abs(value) > MAX_VALUE:
        raise ValueError(f"{name} must be in -{MAX_VALUE:g}..{MAX_VALUE:g}, got {value:g}")
    return value


def parse_int(form, name: str, default: int, lo: int, hi: int) -> int:
    value = _field(form, name, int, f"an integer in {lo}..{hi}")
    if value is None:
        return default
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be in {lo}..{hi}, got {value}")
    return value


def parse_token(form, name: str, required: bool) -> str | None:
    """A token string as typed (the model checks it is exactly one token); None when optional and empty."""
    value = str(form.get(name) or "").strip()
    if not value:
        if required:
            raise ValueError(f"{name} is required: the output token whose score is attributed, e.g. 'red'")
        return None
    if len(value) > 100:
        raise ValueError(f"{name} must be one token, got {len(value)} characters")
    return value
