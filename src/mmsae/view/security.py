"""The viewer's guards: the Host header check (against DNS rebinding), the per-launch token for endpoints
that run the model, and safe decoding of uploaded images (size, type and decompression-bomb limits)."""

from __future__ import annotations

import hmac
import io
import ipaddress
import warnings

from PIL import Image
from starlette.responses import JSONResponse, PlainTextResponse

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
TOKEN_COOKIE = "mmsae_token"
TOKEN_HEADER = "x-mmsae-token"
UPLOAD_FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP")
TOKEN_NEEDED = ("this endpoint runs the model and needs the launch token: open the URL that `mmsae view` "
                "printed at start-up")


class UploadError(ValueError):
    """An upload the viewer refuses (the message says why; it is shown to the user)."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_name(header: str) -> str:
    """The host of a Host header without its port: 'localhost:8765' -> 'localhost', '[::1]:80' -> '[::1]'."""
    header = header.strip().lower()
    if header.startswith("["):
        end = header.find("]")
        return header[:end + 1] if end > 0 else header
    return header.split(":", 1)[0]


class HostCheck:
    """ASGI middleware: a request whose Host header (or Origin, when sent) is not an allowed host gets 400.

    Starlette's TrustedHostMiddleware cuts the port at the first ':', which breaks '[::1]:8765'."""

    def __init__(self, app, allowed: tuple[str, ...]):
        self.app = app
        self.allowed = {h.lower() for h in allowed}

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        host = host_name(headers.get("host", ""))
        origin = headers.get("origin")
        bad = host not in self.allowed
        if origin and origin != "null" and not bad:
            bad = host_name(origin.split("://", 1)[-1].split("/", 1)[0]) not in self.allowed
        if bad:
            what = f"origin {origin!r}" if host in self.allowed else f"host {headers.get('host', '')!r}"
            msg = f"invalid {what}: this viewer answers only to {', '.join(sorted(self.allowed))}"
            if scope["path"].startswith("/api/"):
                response = JSONResponse({"error": msg}, status_code=400)
            else:
                response = PlainTextResponse(msg, status_code=400)
            return await response(scope, receive, send)
        return await self.app(scope, receive, send)


def token_ok(request, token: str) -> bool:
    """The launch token from the header, the cookie (set when the start-up URL was opened) or the query."""
    given = (request.headers.get(TOKEN_HEADER) or request.cookies.get(TOKEN_COOKIE)
             or request.query_params.get("token") or "")
    return hmac.compare_digest(given.encode(), token.encode())


def decode_upload(data: bytes, max_bytes: int, max_pixels: int) -> Image.Image:
    """An uploaded image, decoded only after its size, type and pixel count are checked."""
    if not data:
        raise UploadError("the upload is empty")
    if len(data) > max_bytes:
        raise UploadError(f"the upload is {len(data)} bytes; the limit is {max_bytes}")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))  # reads the header only
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise UploadError(f"the image is too large to decode safely: {e}") from None
        except Exception:
            raise UploadError(f"not an image of a supported type ({', '.join(UPLOAD_FORMATS)})") from None
        if image.format not in UPLOAD_FORMATS:
            raise UploadError(f"image type {image.format} is not accepted; use one of {', '.join(UPLOAD_FORMATS)}")
        w, h = image.size
        if w * h > max_pixels or w < 1 or h < 1:
            raise UploadError(f"the image is {w}x{h} = {w * h} pixels; the limit is {max_pixels}")
        try:
            image.load()
        except Exception as e:
            raise UploadError(f"the image could not be decoded: {type(e).__name__}: {e}") from None
    return image.convert("RGB")
