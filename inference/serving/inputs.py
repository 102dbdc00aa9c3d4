"""Image inputs of HTTP requests: base64, ``data:`` URLs, and (only when enabled) files/URLs.

Everything here returns raw bytes; decoding, the pixel limit and resizing happen in
`inference.imaging` like for every other caller.
"""

from __future__ import annotations

import base64
import binascii
import re
from pathlib import Path
from urllib.parse import unquote, urlparse

import httpx

from inference.serving.config import UrlPolicy


class InputRejected(ValueError):
    """A request input the service refuses; `status` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = 400, code: str = "invalid_request") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


_DATA_URL = re.compile(
    r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[^;,]*)*?),(?P<data>.*)$", re.S
)
_WS = re.compile(r"\s+")


def decode_base64(text: str, what: str = "image") -> bytes:
    """Standard or URL-safe base64, whitespace ignored; InputRejected(400) otherwise."""
    s = _WS.sub("", text)
    if not s:
        raise InputRejected(f"{what}: empty base64 string", code="invalid_image")
    try:
        if "-" in s or "_" in s:
            return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
        return base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError):
        raise InputRejected(f"{what}: invalid base64 data", code="invalid_image") from None


def decode_data_url(url: str) -> bytes:
    m = _DATA_URL.match(url)
    if m is None:
        raise InputRejected("image_url: malformed data: URL", code="invalid_image")
    if ";base64" in (m.group("params") or ""):
        return decode_base64(m.group("data"), "image_url")
    return unquote(m.group("data")).encode("latin-1", errors="replace")


async def fetch_image_url(url: str, policy: UrlPolicy, max_bytes: int) -> bytes:
    """Bytes behind `url`: ``data:`` always; ``file://`` / ``http(s)://`` only if enabled."""
    url = url.strip()
    scheme = urlparse(url).scheme.lower()
    if scheme == "data":
        return decode_data_url(url)
    if scheme == "file":
        if not policy.allow_file_urls:
            raise InputRejected(
                "file:// image URLs are disabled on this service (urls.allow_file_urls)",
                status=403,
                code="url_not_allowed",
            )
        path = Path(unquote(urlparse(url).path)).resolve()
        if policy.file_root is not None:
            root = Path(policy.file_root).resolve()
            if not path.is_relative_to(root):
                raise InputRejected(
                    f"file:// URL outside the allowed folder {root}", 403, "url_not_allowed"
                )
        if not path.is_file():
            raise InputRejected(f"file not found: {path}", 400, "invalid_image")
        if path.stat().st_size > max_bytes:
            raise InputRejected(f"file over {max_bytes} bytes", 413, "too_large")
        return path.read_bytes()
    if scheme in ("http", "https"):
        if not policy.allow_remote_urls:
            raise InputRejected(
                "remote image URLs are disabled on this service (urls.allow_remote_urls); "
                "send the image as base64 or a data: URL",
                status=403,
                code="url_not_allowed",
            )
        return await _download(url, policy.remote_timeout_s, max_bytes)
    raise InputRejected(
        f"unsupported image URL scheme {scheme or '(none)'!r}; use a data: URL",
        400,
        "invalid_image",
    )


async def _download(url: str, timeout_s: float, max_bytes: int) -> bytes:
    try:
        async with (
            httpx.AsyncClient(timeout=timeout_s, follow_redirects=False) as client,
            client.stream("GET", url) as resp,
        ):
            if resp.status_code != 200:
                raise InputRejected(
                    f"image URL answered HTTP {resp.status_code}", 400, "invalid_image"
                )
            chunks, size = [], 0
            async for chunk in resp.aiter_bytes():
                size += len(chunk)
                if size > max_bytes:
                    raise InputRejected(f"image URL over {max_bytes} bytes", 413, "too_large")
                chunks.append(chunk)
            return b"".join(chunks)
    except httpx.HTTPError as e:
        raise InputRejected(f"image URL could not be fetched ({type(e).__name__})", 400) from None
