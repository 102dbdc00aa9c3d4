"""Serve the extractor over HTTP.

    python -m inference.serve --config configs/serve/default.yaml
    python -m inference.serve --backend paddlex --model-dir outputs/model --port 8080
    python -m inference.serve --backend openai --server-url http://127.0.0.1:8118/v1 \\
        --max-concurrency 16

Flags override the config file. Endpoints, limits and examples: ``docs/serving.md``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from inference.backends import BACKENDS, BackendUnavailable
from inference.extractor import Extractor
from inference.serving.app import create_app
from inference.serving.config import ConfigError, ServeConfig

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
    p.add_argument("--log-level", default="info")
    return p


def config_from_args(args: argparse.Namespace) -> ServeConfig:
    cfg = ServeConfig.load(args.config) if args.config else ServeConfig()
    if args.host:
        cfg.host = args.host
    if args.port:
        cfg.port = args.port
    b = cfg.backend
    if args.backend:
        b.backend = args.backend
    if args.model_dir:
        b.model_dir = args.model_dir
    if args.server_url:
        b.server_urls = list(args.server_url)
    if args.api_model:
        b.api_model = args.api_model
    if args.device:
        b.device = args.device
    if args.max_concurrency:
        cfg.limits.max_concurrency = args.max_concurrency
        b.max_concurrency = max(b.max_concurrency, args.max_concurrency)
    if args.max_queue is not None:
        cfg.limits.max_queue = args.max_queue
    if args.timeout_s:
        cfg.limits.request_timeout_s = args.timeout_s
    if args.char_density:
        cfg.image = replace(cfg.image, char_density=args.char_density)
    return cfg


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
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

    app = create_app(extractor, cfg)
    if cfg.auth.resolve() is None and cfg.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("listening on %s without an API key (set $%s)", cfg.host, cfg.auth.api_key_env)
    log.info("serving %s on http://%s:%d", extractor.info(), cfg.host, cfg.port)
    uvicorn.run(
        app,
        host=cfg.host,
        port=cfg.port,
        log_level=args.log_level,
        timeout_keep_alive=10,
        limit_concurrency=max(64, 4 * (cfg.limits.max_concurrency + cfg.limits.max_queue)),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
