"""Serve the extractor over HTTP.

    python -m inference.serve --config configs/serve/default.yaml
    python -m inference.serve --backend paddlex --model-dir outputs/model --port 8080
    python -m inference.serve --backend openai --server-url http://127.0.0.1:8118/v1 \\
        --max-concurrency 16

Flags and ``--set key=value`` override the config file. Endpoints, limits and examples: ``docs/serving.md``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from inference.backends import BACKENDS, BackendUnavailable

if TYPE_CHECKING:  # imported where used: `--help` answers without the web stack
    from inference.serving.config import ServeConfig

log = logging.getLogger("inference.serve")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m inference.serve", description=__doc__.split("\n")[0]
    )
    p.add_argument("--config", type=Path, help="YAML file (configs/serve/*.yaml)")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--backend", choices=BACKENDS)
    p.add_argument("--model-dir")
    p.add_argument("--server-url", action="append", help="OpenAI-compatible upstream (openai)")
    p.add_argument("--api-model", help="model name the upstream serves (openai)")
    p.add_argument("--device")
    p.add_argument("--max-concurrency", type=int, help="extractions at once")
    p.add_argument("--max-queue", type=int, help="requests waiting beyond that (then 503)")
    p.add_argument("--timeout-s", type=float, help="per-request timeout")
    p.add_argument("--char-density", type=float, help="ink pixels per character (downscale)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set limits.max_prompt_chars=4000 (repeatable)",
    )
    p.add_argument("--log-level", default="info")
    return p


def config_from_args(args: argparse.Namespace) -> ServeConfig:
    """The config file, then ``--set`` overrides, then the flags (typed like the file)."""
    from data_tools.llm_client import endpoint_from_flags
    from inference.serving.config import ServeConfig

    pairs = [
        ("host", args.host),
        ("port", args.port),
        ("backend.backend", args.backend),
        ("backend.model_dir", args.model_dir),
        ("backend.device", args.device),
        ("limits.max_concurrency", args.max_concurrency),
        ("limits.max_queue", args.max_queue),
        ("limits.request_timeout_s", args.timeout_s),
        ("image.char_density", args.char_density),
    ]
    flags = [(k, v) for k, v in pairs if v is not None]
    cfg = ServeConfig.load(args.config, [*args.set, *flags])
    b = cfg.backend
    if args.server_url or args.api_model:
        b.endpoint = endpoint_from_flags(b.endpoint, args.server_url, args.api_model, b.model_name)
    if args.max_concurrency and b.endpoint is not None:  # the upstream takes as many at once
        b.endpoint.max_concurrency = max(b.endpoint.max_concurrency or 0, args.max_concurrency)
    return cfg


def main(argv: Sequence[str] | None = None) -> int:
    t0 = time.monotonic()
    args = _parser().parse_args(argv)
    from data_tools.config import ConfigError, redact
    from inference.extractor import Extractor
    from inference.serving.app import create_app

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        cfg = config_from_args(args)
        extractor = Extractor.from_config(cfg.backend, image_options=cfg.image, schema=cfg.schema)
    except (ConfigError, BackendUnavailable, ValueError, FileNotFoundError) as e:
        log.error("%s", e)
        return 2
    import uvicorn

    from inference.serving.connections import uvicorn_config

    service = create_app(extractor, cfg)  # installs the log redaction first
    if cfg.auth.resolve() is None and cfg.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("listening on %s without an API key (set $%s)", cfg.host, cfg.auth.api_key_env)
    log.info(
        "serving %s on http://%s:%d (ready in %.1f s)",
        redact(extractor.info()),
        cfg.host,
        cfg.port,
        time.monotonic() - t0,
    )
    uvicorn.Server(uvicorn_config(service, cfg.host, cfg.port, log_level=args.log_level)).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
