"""Inputs of HTTP requests: image bytes (base64, ``data:`` URLs, files/URLs when enabled)
and the checks on every other field (depth, size, keys, prompt length, lone surrogates).

Image inputs return raw bytes; decoding, the pixel limits and resizing happen in
`inference.imaging` like for every other caller.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from pathlib import Path
from typing import Any
from urllib.parse import unquote, unquote_to_bytes, urlparse

import httpx

from data_tools.compat import async_timeout
from inference.serving.config import Limits, UrlPolicy


class InputRejected(ValueError):
    """A request input the service refuses; `status` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = 400, code: str = "invalid_request") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


# ---------------------------------------------------------------- images


def decode_base64(text: str, what: str = "image") -> bytes:
    """Standard or URL-safe base64, whitespace ignored; InputRejected(400) otherwise.

    No regex pass: the common case (no whitespace) decodes in one C call; whitespace is
    removed with ``split``/``join`` only when the first attempt fails.
    """
    if not text:
        raise InputRejected(f"{what}: empty base64 string", code="invalid_image")
    urlsafe = "-" in text or "_" in text
    try:
        if urlsafe:
            s = "".join(text.split())
            return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
        try:
            return base64.b64decode(text, validate=True)
        except binascii.Error:
            s = "".join(text.split())
            if len(s) == len(text):
                raise
            return base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError):  # ValueError: non-ASCII characters
        raise InputRejected(f"{what}: invalid base64 data", code="invalid_image") from None


def decode_data_url(url: str) -> bytes:
    """``data:[<mime>][;params][;base64],<data>``; percent-encoded data decoded as bytes."""
    head, comma, data = url.partition(",")
    if not comma or not head[:5].lower() == "data:":
        raise InputRejected("image_url: malformed data: URL (no comma)", code="invalid_image")
    params = [p.strip().lower() for p in head[5:].split(";")]
    if "base64" in params[1:]:
        return decode_base64(data, "image_url")
    return unquote_to_bytes(data)


async def fetch_image_url(url: str, policy: UrlPolicy, max_bytes: int) -> bytes:
    """Bytes behind `url`: ``data:`` always; ``file://`` / ``http(s)://`` only if enabled."""
    url = url.strip()
    scheme = url.partition(":")[0].lower() if ":" in url[:16] else ""
    if scheme == "data":
        return decode_data_url(url)
    if scheme == "file":
        if not policy.allow_file_urls:
            raise InputRejected(
                "file:// image URLs are disabled on this service (urls.allow_file_urls)",
                status=403,
                code="url_not_allowed",
            )
        parsed = urlparse(url)
        if parsed.netloc not in ("", "localhost"):
            raise InputRejected(
                f"file:// URL names host {parsed.netloc!r}; only local files "
                "(file:///path or file://localhost/path)",
                403,
                "url_not_allowed",
            )
        path = Path(unquote(parsed.path)).resolve()
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
        return await asyncio.to_thread(path.read_bytes)
    if scheme in ("http", "https"):
        if not policy.allow_remote_urls:
            raise InputRejected(
                "remote image URLs are disabled on this service (urls.allow_remote_urls); "
                "send the image as base64 or a data: URL",
                status=403,
                code="url_not_allowed",
            )
        return await download(url, policy.remote_timeout_s, max_bytes)
    raise InputRejected(
        f"unsupported image URL scheme {scheme or '(none)'!r}; use a data: URL",
        400,
        "invalid_image",
    )


async def download(url: str, timeout_s: float, max_bytes: int) -> bytes:
    """GET `url` within `timeout_s` in total (a server dripping bytes cannot stretch it)."""
    try:
        async with async_timeout(timeout_s):  # noqa: SIM117  (the deadline spans the client too)
            async with (
                httpx.AsyncClient(timeout=timeout_s, follow_redirects=False) as client,
                client.stream("GET", url) as resp,
            ):
                if resp.status_code != 200:
                    raise InputRejected(
                        f"image URL answered HTTP {resp.status_code}", 400, "invalid_image"
                    )
                declared = resp.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > max_bytes:
                    raise InputRejected(f"image URL over {max_bytes} bytes", 413, "too_large")
                chunks, size = [], 0
                async for chunk in resp.aiter_bytes():
                    size += len(chunk)
                    if size > max_bytes:
                        raise InputRejected(f"image URL over {max_bytes} bytes", 413, "too_large")
                    chunks.append(chunk)
                return b"".join(chunks)
    except TimeoutError:
        raise InputRejected(
            f"image URL not fetched within {timeout_s:g} s (urls.remote_timeout_s)",
            400,
            "image_url_timeout",
        ) from None
    except httpx.HTTPError as e:
        raise InputRejected(f"image URL could not be fetched ({type(e).__name__})", 400) from None


# ---------------------------------------------------------------- other fields


def _surrogate_at(s: str) -> int:
    """Index of the first lone surrogate in `s`, or -1."""
    try:
        s.encode("utf-8")
    except UnicodeEncodeError as e:
        return e.start
    return -1


def check_text(value: str, what: str, max_chars: int) -> str:
    """A text field: within `max_chars`, valid Unicode (no lone surrogates)."""
    if len(value) > max_chars:
        raise InputRejected(
            f"{what}: {len(value)} characters is over the limit of {max_chars}",
            413,
            "too_long",
        )
    at = _surrogate_at(value)
    if at >= 0:
        raise InputRejected(
            f"{what}: lone surrogate U+{ord(value[at]):04X} at character {at} is not valid "
            "Unicode; send UTF-8 text",
            400,
            "invalid_text",
        )
    return value


def check_structure(value: Any, what: str, limits: Limits) -> None:
    """`fields` / `request`: depth, number of keys, key length, text validity (iterative)."""
    keys = 0
    stack: list[tuple[Any, int, str]] = [(value, 1, what)]
    while stack:
        v, depth, path = stack.pop()
        if isinstance(v, dict | list):
            if depth > limits.max_json_depth:
                raise InputRejected(
                    f"{what}: nested deeper than {limits.max_json_depth} levels",
                    400,
                    "too_deep",
                )
            if isinstance(v, dict):
                keys += len(v)
                items = []
                for k, child in v.items():
                    check_text(k, f"{path} key", limits.max_key_chars)
                    items.append((child, depth + 1, f"{path}.{k[:40]}"))
                stack.extend(items)
            else:
                keys += len(v)
                stack.extend((c, depth + 1, f"{path}[{i}]") for i, c in enumerate(v))
            if keys > limits.max_request_keys:
                raise InputRejected(
                    f"{what}: more than {limits.max_request_keys} keys",
                    413,
                    "too_many_keys",
                )
        elif isinstance(v, str):
            check_text(v, path, limits.max_key_chars)
