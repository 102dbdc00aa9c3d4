"""Labeling throughput against a local OpenAI-compatible server with a fixed latency per call.

    python benchmarks/label_throughput.py [--images 500] [--latency 0.2] [--concurrency 32]
                                          [--votes 1] [--serial-images N]

The stub server runs in a separate process (no GIL shared with the labeler) and answers every
call after ``--latency`` seconds. The labeler runs exactly as in production
(``configs/label/vat_invoice.yaml``: schema prompt, parsing, canonicalisation, voting, QA,
fsynced appends), once with ``--concurrency`` requests in flight and once with 1.

The server-bound limit is ``concurrency / (latency * votes)`` images/s: no client can beat it.
Rates are over the labeling phase (``RunSummary.elapsed_s``: from the first worker to the last
durable line, connection setup included; image discovery and the ``/models`` preflight
excluded); the wall time with that startup is printed beside them.
``limit_share`` = measured rate at ``--concurrency`` / that limit; ``ratio`` = rate at
``--concurrency`` / rate at 1. The concurrency-1 pass labels all images unless
``--serial-images N`` is given, in which case it labels the first N and says so.
The last line reads ``ratio=R limit_share=S``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from data_tools.label import LabelConfig, label_images  # noqa: E402
from tests.labeling.conftest import truth_for  # noqa: E402
from tests.support.openai_stub import OpenAIStub, TruthResponder, make_test_image  # noqa: E402


def make_images(folder: Path, n: int) -> TruthResponder:
    folder.mkdir(parents=True, exist_ok=True)
    responder = TruthResponder()
    for i in range(n):
        p = make_test_image(folder / f"inv{i:05d}.png", i, size=(96, 64))
        responder.add_image(p, truth_for(i), key=p.stem)
    return responder


def one_pass(base_url: str, images: Path, out: Path, concurrency: int, votes: int, limit: int):
    cfg = LabelConfig.from_yaml(
        REPO / "configs" / "label" / "vat_invoice.yaml",
        [
            f"images={images}",
            f"out_dir={out}",
            f"client.base_urls=[{base_url}]",
            f"concurrency={concurrency}",
            f"votes={votes}",
            f"limit={limit}",
            "progress=false",
        ],
    )
    t = time.monotonic()
    summary = asyncio.run(label_images(cfg))
    wall = time.monotonic() - t
    if summary.ok != limit or summary.failed:
        raise SystemExit(f"benchmark run incomplete: {summary}")
    return summary.ok / summary.elapsed_s, summary.elapsed_s, wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--latency", type=float, default=0.2, help="seconds per call")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--votes", type=int, default=1, help="calls per image (the labeler's k)")
    ap.add_argument("--serial-images", type=int, help="label only N images at concurrency 1")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    with tempfile.TemporaryDirectory(prefix="label_bench_") as tmp:
        tmp_path = Path(tmp)
        responder = make_images(tmp_path / "images", args.images)
        with OpenAIStub(
            responder,
            latency_s=args.latency,
            mode="process",
            record_bodies=False,
            model="baidu/ERNIE-4.5-VL-28B-A3B-Paddle",
        ) as stub:
            c = args.concurrency
            rate_c, took_c, wall_c = one_pass(
                stub.base_url, tmp_path / "images", tmp_path / "out_c", c, args.votes, args.images
            )
            n1 = args.serial_images or args.images
            rate_1, took_1, wall_1 = one_pass(
                stub.base_url, tmp_path / "images", tmp_path / "out_1", 1, args.votes, n1
            )
            calls = stub.stats()["calls"]

    limit_c = c / (args.latency * args.votes)
    limit_1 = 1 / (args.latency * args.votes)
    print(f"images={args.images} latency={args.latency}s votes={args.votes} calls={calls}")
    print(
        f"concurrency={c}: {args.images} images in {took_c:.2f}s = {rate_c:.2f} img/s "
        f"(server-bound limit {limit_c:.1f} img/s, {rate_c / limit_c:.1%}); "
        f"wall with startup {wall_c:.2f}s = {args.images / wall_c:.2f} img/s"
    )
    note = "" if n1 == args.images else f" [subset of {n1} images, rate extrapolated]"
    print(
        f"concurrency=1: {n1} images in {took_1:.2f}s = {rate_1:.3f} img/s "
        f"(limit {limit_1:.2f} img/s, {rate_1 / limit_1:.1%}); "
        f"wall with startup {wall_1:.2f}s{note}"
    )
    print(f"ratio={rate_c / rate_1:.2f} limit_share={rate_c / limit_c:.3f}")


if __name__ == "__main__":
    main()
