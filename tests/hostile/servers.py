"""The service under test: uvicorn in a thread (same process) or in a subprocess (own RSS)."""

from __future__ import annotations

import contextlib
import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from PIL import Image

from inference.extractor import Extractor
from inference.serving.app import Service, create_app
from inference.serving.config import ServeConfig
from inference.serving.connections import uvicorn_config
from inference.serving.process import free_port

REPO = Path(__file__).resolve().parents[2]
SMALL = {"min_pixels": 28 * 28 * 4, "max_pixels": 28 * 28 * 64}


class ServerThread:
    """uvicorn serving a `Service` in a background thread on 127.0.0.1."""

    def __init__(self, app: Service, **kwargs: Any) -> None:
        import uvicorn

        self.app = app
        self.port = free_port()
        config = uvicorn_config(
            app, "127.0.0.1", self.port, log_level="warning", lifespan="on", **kwargs
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@contextlib.contextmanager
def serving(app: Service, **kwargs: Any) -> Iterator[ServerThread]:
    with ServerThread(app, **kwargs) as server:
        yield server


def make_service(
    backend: dict | None = None, extractor: Extractor | None = None, **sections: Any
) -> tuple[Service, ServeConfig]:
    cfg = ServeConfig.from_dict(
        {
            "backend": backend or {"backend": "fake"},
            "image": SMALL,
            "auth": {"api_key_env": None},
            **sections,
        }
    )
    ex = extractor or Extractor.from_config(cfg.backend, image_options=cfg.image, schema=cfg.schema)
    return create_app(ex, cfg), cfg


def png_bytes(size: tuple[int, int] = (160, 120), fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (240, 240, 230)).save(buf, format=fmt)
    return buf.getvalue()
