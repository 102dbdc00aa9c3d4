"""Canonical labels → PaddleOCR-VL prompt-SFT data (ERNIEKit or PaddleFormers JSONL).

    python -m data_tools.build_dataset --labels labels.jsonl --out-dir data/sft \\
        --variants-per-image 6 --val-ratio 0.1 --seed 42 [--format erniekit|paddleformers] \\
        [--image-root /mnt/data/invoices] [--skip-bad] [--config configs/dataset/vat_invoice.yaml]

For every image: one full `OCR:{}` record plus N-1 distinct partial or structured
prompts, drawn with a generator seeded by (seed, record id) so an image's prompts do not
depend on the rest of the file. The train/val split is by image (records sharing an
image always land together), ordered by a seeded hash so adding images later does not
reshuffle the ones already split. Outputs, all written atomically:

    D/train.jsonl  D/val.jsonl  D/split.json (ids on each side)  D/stats.json
    D/val.labels.jsonl (the val images' label records: the gold for scoring)

Same inputs and seed → byte-identical files.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import random
import statistics
import sys
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from data_tools.images import MAX_PIXELS, MIN_PIXELS, BadImageError, check_image, visual_tokens
from data_tools.jsonl import atomic_write_text, dumps_line, write_jsonl_atomic
from data_tools.prompts import FULL_PROMPT, answer_text, build_prompt, placeholder_for, project
from data_tools.records import LabelFormatError, LabelRecord, read_labels

log = logging.getLogger("data_tools.build_dataset")

FORMATS = ("erniekit", "paddleformers")
VARIANT_KINDS = ("full", "key", "keys", "structured")


@dataclass
class BuildConfig:
    variants_per_image: int = 6
    val_ratio: float = 0.1
    seed: int = 42
    format: str = "erniekit"
    image_root: str | None = None
    skip_bad: bool = False
    check_images: bool = True
    include_needs_review: bool = False  # records the labeler flagged (meta.needs_review)
    min_pixels: int = MIN_PIXELS
    max_pixels: int = MAX_PIXELS
    max_keys: int = 5  # most top-level keys in one multi-key prompt
    kind_weights: dict[str, float] = field(
        default_factory=lambda: {"key": 0.4, "keys": 0.3, "structured": 0.3}
    )

    def validate(self) -> None:
        if self.variants_per_image < 1:
            raise ValueError("--variants-per-image must be >= 1 (1 = only the full OCR:{} record)")
        if not 0.0 <= self.val_ratio < 1.0:
            raise ValueError("--val-ratio must be in [0, 1)")
        if self.format not in FORMATS:
            raise ValueError(f"--format must be one of {FORMATS}, got {self.format!r}")
        if self.min_pixels <= 0 or self.max_pixels < self.min_pixels:
            raise ValueError("min_pixels must be > 0 and <= max_pixels")
        unknown = set(self.kind_weights) - set(VARIANT_KINDS[1:])
        if unknown:
            raise ValueError(f"unknown variant kinds {sorted(unknown)}; use {VARIANT_KINDS[1:]}")


@dataclass
class Sample:
    """One image with its truth, resolved and checked."""

    record: LabelRecord
    image_abs: Path  # where the image is on this machine
    image_out: str  # the path written into the SFT file
    labels_file: Path
    size: tuple[int, int] | None = None  # (width, height) when checked


# ---------------------------------------------------------------- prompt variants


def sample_requests(
    fields: dict[str, Any], n: int, rng: random.Random, cfg: BuildConfig
) -> list[tuple[str, dict[str, Any], str]]:
    """N-1 distinct (kind, request, prompt) triples besides the full request; fewer if the
    record has too few fields to make N-1 different prompts."""
    keys = list(fields)
    containers = [
        k
        for k, v in fields.items()
        if (isinstance(v, dict) and v) or (isinstance(v, list) and v and isinstance(v[0], dict))
    ]
    kinds = [k for k in cfg.kind_weights if cfg.kind_weights[k] > 0]
    weights = [cfg.kind_weights[k] for k in kinds]
    if not containers and "structured" in kinds:
        i = kinds.index("structured")
        del kinds[i], weights[i]
    seen = {FULL_PROMPT}
    out: list[tuple[str, dict[str, Any], str]] = []
    if not keys or not kinds:
        return out
    attempts = 0
    while len(out) < n - 1 and attempts < 30 * n:
        attempts += 1
        kind = rng.choices(kinds, weights)[0]
        if kind == "key":
            k = rng.choice(keys)
            request = {k: placeholder_for(fields[k])}
        elif kind == "keys":
            if len(keys) < 2:
                continue
            chosen = rng.sample(keys, rng.randint(2, min(cfg.max_keys, len(keys))))
            request = {k: placeholder_for(fields[k]) for k in chosen}
        else:  # structured: sub-keys of one container, maybe with a few plain keys
            ck = rng.choice(containers)
            value = fields[ck]
            sub_source = value if isinstance(value, dict) else value[0]
            sub_keys = list(sub_source)
            chosen = rng.sample(sub_keys, rng.randint(1, len(sub_keys)))
            sub = {k: placeholder_for(sub_source[k]) for k in chosen}
            request = {ck: sub if isinstance(value, dict) else [sub]}
            others = [k for k in keys if k != ck]
            if others and rng.random() < 0.3:
                for k in rng.sample(others, rng.randint(1, min(2, len(others)))):
                    request[k] = placeholder_for(fields[k])
        prompt = build_prompt(request)
        if prompt in seen:
            continue
        seen.add(prompt)
        out.append((kind, request, prompt))
    return out


# ---------------------------------------------------------------- writers


def erniekit_record(image: str, prompt: str, answer: str) -> dict[str, Any]:
    """ERNIEKit `OCR-VL-SFT`: prompt tagged `mask` (no loss), answer `no_mask` (trained)."""
    return {
        "image_info": [{"matched_text_index": 0, "image_url": image}],
        "text_info": [{"text": prompt, "tag": "mask"}, {"text": answer, "tag": "no_mask"}],
    }


def paddleformers_record(image: str, prompt: str, answer: str) -> dict[str, Any]:
    """PaddleFormers `VL-SFT` with template `paddleocr_vl`."""
    return {
        "messages": [
            {"role": "user", "content": f"<image>{prompt}"},
            {"role": "assistant", "content": answer},
        ],
        "images": [image],
    }


WRITERS = {"erniekit": erniekit_record, "paddleformers": paddleformers_record}


# ---------------------------------------------------------------- build


def _image_out(
    record: LabelRecord, image_abs: Path, labels_file: Path, image_root: str | None
) -> str:
    if image_root is None:
        return str(image_abs)
    rel = Path(record.image)
    if rel.is_absolute():
        base = labels_file.resolve().parent
        try:
            rel = image_abs.relative_to(base)
        except ValueError:
            raise ValueError(
                f"{labels_file}: image {record.image!r} (id {record.id}) is outside the labels "
                "folder, so it cannot be rewritten under --image-root; store it relative"
            ) from None
    return str(Path(image_root) / os.path.normpath(rel))


def _split_rank(seed: int, key: str) -> str:
    return hashlib.sha256(f"{seed}\x00{key}".encode()).hexdigest()


def split_groups(keys: Sequence[str], val_ratio: float, seed: int) -> set[str]:
    """The group keys that go to val: the `round(ratio * n)` smallest seeded hashes
    (at least one when the ratio is > 0 and there are two groups or more)."""
    if val_ratio <= 0 or len(keys) < 2:
        return set()
    n_val = min(len(keys) - 1, max(1, round(val_ratio * len(keys))))
    ranked = sorted(keys, key=lambda k: _split_rank(seed, k))
    return set(ranked[:n_val])


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    values = sorted(values)

    def pct(p: float) -> float:
        return values[min(len(values) - 1, int(p * (len(values) - 1) + 0.5))]

    return {
        "min": values[0],
        "mean": round(statistics.fmean(values), 2),
        "p50": pct(0.5),
        "p95": pct(0.95),
        "max": values[-1],
    }


def load_samples(labels_files: Sequence[Path], cfg: BuildConfig) -> tuple[list[Sample], int]:
    """Resolved samples, and how many flagged records were left out."""
    samples: list[Sample] = []
    n_review = 0
    seen_ids: dict[str, Path] = {}
    for lf in labels_files:
        for rec in read_labels(lf):
            if rec.meta.get("needs_review") and not cfg.include_needs_review:
                n_review += 1
                continue
            if rec.id in seen_ids:
                raise LabelFormatError(
                    f"{lf}: id {rec.id!r} also in {seen_ids[rec.id]}; ids must be unique across files"
                )
            seen_ids[rec.id] = lf
            image_abs = Path(rec.image).expanduser()
            if not image_abs.is_absolute():
                image_abs = lf.resolve().parent / image_abs
            image_abs = Path(os.path.normpath(image_abs))
            samples.append(
                Sample(rec, image_abs, _image_out(rec, image_abs, lf, cfg.image_root), lf)
            )
    return samples, n_review


def check_samples(samples: list[Sample], workers: int = 4) -> list[str]:
    """Decode every distinct image once; fill sizes; return `file: id: problem` lines."""
    unique = sorted({s.image_abs for s in samples})

    def check(path: Path) -> tuple[Path, tuple[int, int] | str]:
        try:
            info = check_image(path)
            return path, (info.width, info.height)
        except BadImageError as exc:
            return path, str(exc)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = dict(pool.map(check, unique))
    problems = []
    for s in samples:
        r = results[s.image_abs]
        if isinstance(r, str):
            problems.append(f"{s.labels_file}: id {s.record.id}: {r}")
        else:
            s.size = r
    return problems


def build(labels_files: Sequence[Path], out_dir: Path, cfg: BuildConfig) -> dict[str, Any]:
    """Build the dataset; returns the stats written to `out_dir/stats.json`."""
    cfg.validate()
    labels_files = [Path(p) for p in labels_files]
    samples, n_review = load_samples(labels_files, cfg)
    if not samples:
        raise ValueError(
            f"no usable label records in {', '.join(map(str, labels_files))} "
            "(records flagged meta.needs_review are left out unless --include-needs-review)"
        )

    bad: list[str] = []
    if cfg.check_images:
        bad = check_samples(samples)
        if bad and not cfg.skip_bad:
            listing = "\n  ".join(bad[:50]) + ("\n  ..." if len(bad) > 50 else "")
            raise BadImageError(
                f"{len(bad)} record(s) with a missing or broken image:\n  {listing}\n"
                "Fix the paths (relative paths resolve against the labels file's folder) "
                "or pass --skip-bad to leave these records out."
            )
        if bad:
            log.warning("skipping %d record(s) with bad images (--skip-bad)", len(bad))
        samples = [s for s in samples if s.size is not None]

    groups = sorted({str(s.image_abs) for s in samples})
    val_groups = split_groups(groups, cfg.val_ratio, cfg.seed)
    write = WRITERS[cfg.format]

    rows: dict[str, list[tuple[str, dict[str, Any]]]] = {"train": [], "val": []}
    kinds: Counter[str] = Counter()
    requested: Counter[str] = Counter()
    present: Counter[str] = Counter()
    answer_chars: list[float] = []
    short_of_variants = 0
    for s in samples:
        split = "val" if str(s.image_abs) in val_groups else "train"
        fields = s.record.fields
        present.update(k for k, v in fields.items() if v not in ("", [], {}))
        rng = random.Random(f"{cfg.seed}:{s.record.id}")
        variants = [("full", {}, FULL_PROMPT)]
        variants += sample_requests(fields, cfg.variants_per_image, rng, cfg)
        if len(variants) < cfg.variants_per_image:
            short_of_variants += 1
        for kind, request, prompt in variants:
            answer = answer_text(project(fields, request))
            kinds[kind] += 1
            requested.update(request.keys() if request else fields.keys())
            answer_chars.append(len(answer))
            rows[split].append((s.record.id, write(s.image_out, prompt, answer)))

    # shuffle train (seeded) so an image's variants are not adjacent; val stays in file order
    random.Random(cfg.seed).shuffle(rows["train"])

    out_dir.mkdir(parents=True, exist_ok=True)
    write_jsonl_atomic(out_dir / "train.jsonl", (r for _, r in rows["train"]))
    write_jsonl_atomic(out_dir / "val.jsonl", (r for _, r in rows["val"]))
    split_map = {
        "train": sorted({s.record.id for s in samples if str(s.image_abs) not in val_groups}),
        "val": sorted({s.record.id for s in samples if str(s.image_abs) in val_groups}),
    }
    atomic_write_text(out_dir / "split.json", dumps_line(split_map))
    # the gold for scoring predictions on val: its label records, image paths absolute
    write_jsonl_atomic(
        out_dir / "val.labels.jsonl",
        (
            dict(s.record.to_dict(), image=str(s.image_abs))
            for s in samples
            if str(s.image_abs) in val_groups
        ),
    )

    sizes = [s.size for s in samples if s.size is not None]
    distinct_sizes = {str(s.image_abs): s.size for s in samples if s.size is not None}
    tokens = [
        visual_tokens(h, w, min_pixels=cfg.min_pixels, max_pixels=cfg.max_pixels)
        for (w, h) in distinct_sizes.values()
    ]
    stats = {
        "format": cfg.format,
        "config": {
            "variants_per_image": cfg.variants_per_image,
            "val_ratio": cfg.val_ratio,
            "seed": cfg.seed,
            "image_root": cfg.image_root,
            "check_images": cfg.check_images,
            "min_pixels": cfg.min_pixels,
            "max_pixels": cfg.max_pixels,
        },
        "labels": [str(p) for p in labels_files],
        "records": {"train": len(rows["train"]), "val": len(rows["val"])},
        "images": {"train": len(groups) - len(val_groups), "val": len(val_groups)},
        "skipped_bad_images": bad,
        "skipped_needs_review": n_review,
        "images_short_of_variants": short_of_variants,
        "variant_kinds": dict(sorted(kinds.items())),
        "field_frequency": {
            "requested": dict(requested.most_common()),
            "non_empty_in_labels": dict(present.most_common()),
        },
        "answer_chars": _percentiles(answer_chars),
        "image_width": _percentiles([float(w) for w, _ in sizes]),
        "image_height": _percentiles([float(h) for _, h in sizes]),
        "visual_tokens_per_image": _percentiles([float(t) for t in tokens]),
    }
    atomic_write_text(out_dir / "stats.json", json_pretty(stats))
    return stats


def json_pretty(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, indent=2) + "\n"


# ---------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m data_tools.build_dataset",
        description="Build PaddleOCR-VL prompt-SFT JSONL (ERNIEKit or PaddleFormers) from canonical labels.",
    )
    p.add_argument("--labels", nargs="+", required=True, type=Path, help="labels.jsonl file(s)")
    p.add_argument("--out-dir", required=True, type=Path)
    p.add_argument("--config", type=Path, help="YAML with defaults for the options below")
    p.add_argument(
        "--variants-per-image", type=int, help="records per image, the full one included"
    )
    p.add_argument("--val-ratio", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--format", choices=FORMATS)
    p.add_argument("--image-root", help="rewrite image paths under this folder (training machine)")
    p.add_argument("--skip-bad", action="store_true", default=None, help="leave out bad images")
    p.add_argument("--no-image-check", dest="check_images", action="store_false", default=None)
    p.add_argument(
        "--include-needs-review",
        action="store_true",
        default=None,
        help="keep records the labeler flagged for review (meta.needs_review); left out by default",
    )
    p.add_argument("--min-pixels", type=int)
    p.add_argument("--max-pixels", type=int)
    return p


def config_from_args(args: argparse.Namespace) -> BuildConfig:
    values: dict[str, Any] = {}
    if args.config:
        raw = yaml.safe_load(args.config.read_text(encoding="utf-8")) or {}
        allowed = set(BuildConfig.__dataclass_fields__)
        unknown = set(raw) - allowed
        if unknown:
            raise ValueError(
                f"{args.config}: unknown keys {sorted(unknown)}; allowed: {sorted(allowed)}"
            )
        values.update(raw)
    for name in BuildConfig.__dataclass_fields__:
        v = getattr(args, name, None)
        if v is not None:
            values[name] = v
    return BuildConfig(**values)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = _parser().parse_args(argv)
    try:
        cfg = config_from_args(args)
        stats = build(args.labels, args.out_dir, cfg)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    r, i = stats["records"], stats["images"]
    print(
        f"wrote {args.out_dir}/train.jsonl ({r['train']} records, {i['train']} images) and "
        f"val.jsonl ({r['val']} records, {i['val']} images) in {stats['format']} format; "
        f"variant kinds {stats['variant_kinds']}; stats in {args.out_dir}/stats.json"
    )
    if stats["skipped_bad_images"]:
        print(
            f"skipped {len(stats['skipped_bad_images'])} record(s) with bad images:",
            file=sys.stderr,
        )
        for line in stats["skipped_bad_images"]:
            print(f"  {line}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
