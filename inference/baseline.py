"""The OCR + LLM baseline: PP-OCR reads the invoice, an LLM fills the requested JSON.

    python -m inference.baseline --dataset labels.jsonl --llm-url http://127.0.0.1:8180/v1 \\
        [--llm-model ERNIE-4.5-21B-A3B-Paddle] --out predictions.jsonl \\
        [--config configs/eval/baseline.yaml] [--prompt 'OCR:{}'] [--ocr-only]

Stages, per document:

1. **OCR** - a PaddleOCR text pipeline (``data_tools.ppocr``; default the offline PP-OCRv6
   small ONNX models from the rapidocr wheel, ``engine="onnxruntime"``; ``ocr.preset:
   server`` selects PP-OCRv6 medium for GPU users). Lines are put in reading order and
   cached on disk by image hash (``inference.ocr_cache``).
2. **LLM** - any OpenAI-compatible endpoint (``data_tools.llm_client``; by default
   FastDeploy serving ERNIE-4.5-21B-A3B-Paddle) gets the OCR text and exactly the JSON
   skeleton the prompt requests (the same prompt grammar the VLM gets; ``OCR:{}`` = the
   schema's whole skeleton) and answers JSON, read by ``data_tools.parsing``.

Output: ``predictions.jsonl`` (the common contract plus ``stage_latency_s`` = {"ocr",
"llm"} and ``ocr`` = {"cache_hit", "n_lines"}), appended one whole line per document so
an interrupted run resumes where it stopped; and an **OCR-ceiling report** beside it
(``<out>.ocr_ceiling.json`` / ``.md``): per field, the share of non-empty gold values
that occur in the OCR text - the best any OCR + LLM pipeline could do with this OCR.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import re
import sys
import time
import unicodedata
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from data_tools.jsonl import append_jsonl, atomic_write_text, drop_torn_tail, read_jsonl
from data_tools.llm_client import AsyncChatClient, EndpointConfig, FatalLLMError, LLMError
from data_tools.normalize import (
    normalize_percent,
    parse_amount,
    parse_date,
    parse_number,
)
from data_tools.parsing import parse_model_output
from data_tools.ppocr import OcrLine, lines_to_text
from data_tools.prompts import FULL_PROMPT, parse_prompt
from data_tools.records import LabelRecord, read_labels, resolve_image
from inference.ocr_cache import OcrCache, image_sha256

log = logging.getLogger(__name__)

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "eval" / "baseline.yaml"
DEFAULT_MODEL = "ERNIE-4.5-21B-A3B-Paddle"

SYSTEM_PROMPT = (
    "你是发票信息抽取助手。输入是一张发票经 OCR 识别后的文字（按阅读顺序逐行排列，"
    "同一行的文字块用两个空格隔开）和一个 JSON 模板。请按模板填写：键名和顺序与模板完全一致，"
    '值照抄发票上印刷的内容（金额保留符号与小数，日期保持原格式）；发票上没有的值填空字符串 ""；'
    "列表中每一行明细写一个对象。只输出 JSON，不要任何解释。"
)
USER_TEMPLATE = "OCR 文本：\n{ocr_text}\n\nJSON 模板：\n{skeleton}"


# ---------------------------------------------------------------- configuration
@dataclass
class OcrSettings:
    preset: str = "small-onnx"  # small-onnx | server
    device: str = "cpu"
    cpu_threads: int | None = None
    cache_dir: str = "outputs/ocr_cache"
    model_cache_dir: str | None = None  # where the PaddleX model dirs are built
    options: dict[str, Any] = field(default_factory=dict)  # passed to PaddleOCR(...)

    def identity(self) -> dict[str, Any]:
        """What determines the OCR output (the cache key)."""
        return {"preset": self.preset, "options": self.options, "version": 1}


@dataclass
class LlmSettings:
    base_urls: list[str] = field(default_factory=list)
    model: str = DEFAULT_MODEL
    api_key_env: str | None = "OPENAI_API_KEY"
    max_tokens: int = 2048
    temperature: float = 0.0
    timeout_s: float = 180.0
    max_attempts: int = 6
    concurrency: int = 4
    extra_body: dict[str, Any] = field(default_factory=dict)
    system_prompt: str = SYSTEM_PROMPT
    user_template: str = USER_TEMPLATE


@dataclass
class BaselineConfig:
    schema: str = "vat_invoice"
    prompt: str = FULL_PROMPT
    ocr: OcrSettings = field(default_factory=OcrSettings)
    llm: LlmSettings = field(default_factory=LlmSettings)

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "config") -> BaselineConfig:
        known = {"schema", "prompt", "ocr", "llm"}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"{where}: unknown keys {sorted(unknown)}; known: {sorted(known)}")

        def sub(kind: type, raw: Any, name: str) -> Any:
            raw = raw or {}
            bad = set(raw) - set(kind.__dataclass_fields__)
            if bad:
                raise ValueError(f"{where}.{name}: unknown keys {sorted(bad)}")
            return kind(**raw)

        return cls(
            schema=d.get("schema", "vat_invoice"),
            prompt=d.get("prompt", FULL_PROMPT),
            ocr=sub(OcrSettings, d.get("ocr"), "ocr"),
            llm=sub(LlmSettings, d.get("llm"), "llm"),
        )

    @classmethod
    def from_yaml(cls, path: str | Path) -> BaselineConfig:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        return cls.from_dict(raw, where=str(path))


# ---------------------------------------------------------------- OCR stage
class PaddleOcrEngine:
    """PaddleOCR, created on first use (model loading takes seconds)."""

    def __init__(self, settings: OcrSettings) -> None:
        self.settings = settings
        self._ocr: Any = None

    def __call__(self, image: Path) -> list[OcrLine]:
        from data_tools.ppocr import create_paddleocr, ocr_lines

        if self._ocr is None:
            s = self.settings
            self._ocr = create_paddleocr(
                preset=s.preset,
                device=s.device,
                cpu_threads=s.cpu_threads,
                cache_dir=s.model_cache_dir,
                **s.options,
            )
        return ocr_lines(self._ocr, image)


OcrEngine = Callable[[Path], list[OcrLine]]


@dataclass
class OcrResult:
    lines: list[OcrLine]
    seconds: float  # the OCR's own run time (from the cache entry on a hit)
    cache_hit: bool


def run_ocr(image: Path, engine: OcrEngine, cache: OcrCache | None) -> OcrResult:
    sha = image_sha256(image) if cache is not None else ""
    if cache is not None:
        hit = cache.get(sha)
        if hit is not None:
            return OcrResult(hit.lines, hit.ocr_s, True)
    t0 = time.perf_counter()
    lines = engine(image)
    seconds = time.perf_counter() - t0
    if cache is not None:
        cache.put(sha, lines, seconds)
    return OcrResult(lines, seconds, False)


# ---------------------------------------------------------------- LLM stage
def skeleton_for(prompt: str, schema: Any | None) -> dict[str, Any]:
    """The JSON template the LLM fills: the request itself, or the schema skeleton for ``OCR:{}``."""
    request = parse_prompt(prompt)
    if request:
        return request
    if schema is None:
        raise ValueError("a full prompt (OCR:{}) needs a schema to build the JSON template")
    return schema.skeleton()


def build_messages(
    ocr_text: str, skeleton: dict[str, Any], llm: LlmSettings
) -> list[dict[str, Any]]:
    user = llm.user_template.format(
        ocr_text=ocr_text, skeleton=json.dumps(skeleton, ensure_ascii=False)
    )
    return [{"role": "system", "content": llm.system_prompt}, {"role": "user", "content": user}]


# ---------------------------------------------------------------- OCR ceiling
_NUMBER = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?")
_PERCENT = re.compile(r"\d+(?:\.\d+)?\s*%")
_SPACE = re.compile(r"\s+")


def _squash(s: str) -> str:
    return _SPACE.sub("", unicodedata.normalize("NFKC", str(s))).casefold()


@dataclass
class OcrText:
    """The OCR of one image, prepared for value look-ups."""

    text: str
    lines: list[str]
    squashed: str = ""
    squashed_lines: list[str] = field(default_factory=list)
    numbers: set[Decimal] = field(default_factory=set)
    dates: set[str] = field(default_factory=set)
    percents: set[str] = field(default_factory=set)

    @classmethod
    def from_lines(cls, lines: Sequence[OcrLine]) -> OcrText:
        texts = [ln.text for ln in lines]
        full = unicodedata.normalize("NFKC", "\n".join(texts))
        numbers = set()
        for tok in _NUMBER.findall(full):
            d = parse_number(tok)
            if d is not None:
                numbers.add(d)
        dates = {d.isoformat() for t in texts if (d := parse_date(t)) is not None}
        percents = {normalize_percent(p) for p in _PERCENT.findall(full)}
        return cls(
            text=full,
            lines=texts,
            squashed=_squash(full),
            squashed_lines=[_squash(t) for t in texts],
            numbers=numbers,
            dates=dates,
            percents=percents,
        )


def value_in_ocr(value: str, ftype: str, ocr: OcrText) -> bool:
    """Does a gold value occur in the OCR text? (definition in docs/evaluation.md)

    Typed first: an amount/number equals a number printed anywhere, a date equals a date
    on some line, a percent equals a printed percent. Then text: the value without
    whitespace (NFKC, case-folded) is a substring of the whole OCR text without whitespace,
    or - for a value containing whitespace or line breaks (wrapped names, the four lines
    of 密码区) - each whitespace-separated piece occurs within one OCR line.
    """
    if ftype in ("amount", "number"):
        d = parse_amount(value) if ftype == "amount" else parse_number(value)
        if d is not None and d in ocr.numbers:
            return True
    elif ftype == "date":
        d = parse_date(value)
        if d is not None and d.isoformat() in ocr.dates:
            return True
    elif ftype == "percent" and normalize_percent(value) in ocr.percents:
        return True
    s = _squash(value)
    if not s:
        return True
    if s in ocr.squashed:
        return True
    pieces = [_squash(p) for p in str(value).split()]
    if len(pieces) > 1:
        return all(any(p in line for line in ocr.squashed_lines) for p in pieces if p)
    return False


def _gold_leaves(value: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], str]]:
    out: list[tuple[tuple[str, ...], str]] = []
    if isinstance(value, dict):
        for k, v in value.items():
            out += _gold_leaves(v, (*path, k))
    elif isinstance(value, list):
        for v in value:
            out += _gold_leaves(v, (*path, "[]"))
    elif value is not None and str(value).strip():
        out.append((path, str(value)))
    return out


def _field_name(path: tuple[str, ...]) -> str:
    out = ""
    for p in path:
        out = out + "[]" if p == "[]" else (f"{out}.{p}" if out else p)
    return out


def ocr_ceiling(
    docs: Sequence[tuple[LabelRecord, list[OcrLine]]], schema: Any | None
) -> dict[str, Any]:
    """Per field: non-empty gold values, how many occur in the OCR text, and the share."""
    per_field: dict[str, dict[str, Any]] = {}
    missing: dict[str, list[dict[str, str]]] = defaultdict(list)
    for rec, lines in docs:
        ocr = OcrText.from_lines(lines)
        for path, value in _gold_leaves(rec.fields):
            plain = tuple(p for p in path if p != "[]")
            ftype = schema.field_type(plain) if schema is not None else "text"
            name = _field_name(path)
            row = per_field.setdefault(name, {"type": ftype, "n": 0, "found": 0})
            row["n"] += 1
            if value_in_ocr(value, ftype, ocr):
                row["found"] += 1
            else:
                missing[rec.id].append({"field": name, "gold": value})
    for row in per_field.values():
        row["share"] = row["found"] / row["n"] if row["n"] else None
    n = sum(r["n"] for r in per_field.values())
    found = sum(r["found"] for r in per_field.values())
    return {
        "definition": (
            "share of non-empty gold leaf values that occur in the OCR text: typed match for "
            "amount/number/date/percent, else whitespace-free NFKC substring of the whole "
            "text, or (values with whitespace) every piece inside one OCR line"
        ),
        "n_docs": len(docs),
        "overall": {"n": n, "found": found, "share": found / n if n else None},
        "per_field": per_field,
        "not_found": dict(missing),
    }


def ceiling_markdown(report: dict[str, Any]) -> str:
    o = report["overall"]
    lines = [
        "# OCR ceiling",
        "",
        f"{report['definition']}.",
        "",
        f"Documents: {report['n_docs']}; overall {o['found']}/{o['n']} = {(o['share'] or 0):.3f}",
        "",
        "| field | type | found / gold values | share |",
        "|---|---|---|---|",
    ]
    for name, r in report["per_field"].items():
        lines.append(f"| {name} | {r['type']} | {r['found']} / {r['n']} | {r['share']:.3f} |")
    if report["not_found"]:
        lines += ["", "## Values not found in the OCR text", ""]
        for doc_id, items in report["not_found"].items():
            for it in items:
                gold = it["gold"].replace("\n", "⏎")
                lines.append(f"- `{doc_id}` {it['field']}: {gold}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- the run
def system_name(cfg: BaselineConfig) -> str:
    return f"ppocr-{cfg.ocr.preset}+{cfg.llm.model}"


def _done_keys(out: Path) -> set[tuple[str, str]]:
    if not out.is_file():
        return set()
    if drop_torn_tail(out):
        log.warning("%s: dropped a torn last line left by an interrupted run", out)
    return {(str(r.get("id")), str(r.get("prompt"))) for _, r in read_jsonl(out)}


async def _run(
    records: Sequence[LabelRecord],
    labels_path: Path,
    cfg: BaselineConfig,
    out: Path,
    engine: OcrEngine,
    cache: OcrCache | None,
    schema: Any | None,
    ocr_only: bool,
) -> list[tuple[LabelRecord, list[OcrLine]]]:
    skeleton = skeleton_for(cfg.prompt, schema)
    done = _done_keys(out) if not ocr_only else set()
    todo = [r for r in records if (r.id, cfg.prompt) not in done]
    if done:
        log.info(
            "%s: %d documents already done; %d to go", out, len(records) - len(todo), len(todo)
        )
    ocr_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ocr")
    loop = asyncio.get_running_loop()
    seen: list[tuple[LabelRecord, list[OcrLine]]] = []
    name = system_name(cfg)

    async def ocr_one(rec: LabelRecord) -> OcrResult:
        image = resolve_image(rec.image, labels_path)
        if not image.is_file():
            raise FileNotFoundError(f"{labels_path}: record {rec.id}: image not found: {image}")
        return await loop.run_in_executor(ocr_pool, run_ocr, image, engine, cache)

    if ocr_only:
        try:
            for rec in records:
                res = await ocr_one(rec)
                log.info("%s: OCR %.2f s (%s), %d lines", rec.id, res.seconds,
                         "cache" if res.cache_hit else "run", len(res.lines))  # fmt: skip
                seen.append((rec, res.lines))
        finally:
            ocr_pool.shutdown(wait=True)
        return seen

    llm = cfg.llm
    if not llm.base_urls:
        raise ValueError("no LLM endpoint: pass --llm-url or set llm.base_urls in the config")
    client_cfg = EndpointConfig(
        base_urls=list(llm.base_urls),
        model=llm.model,
        api_key_env=llm.api_key_env,
        timeout_s=llm.timeout_s,
        max_attempts=llm.max_attempts,
        max_concurrency=llm.concurrency,
        extra_body=dict(llm.extra_body),
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    fatal: list[BaseException] = []

    async with AsyncChatClient(client_cfg) as client:

        async def one(rec: LabelRecord) -> None:
            if fatal:
                return
            t0 = time.perf_counter()
            res = await ocr_one(rec)
            seen.append((rec, res.lines))
            messages = build_messages(lines_to_text(res.lines), skeleton, llm)
            row: dict[str, Any] = {
                "id": rec.id,
                "image": rec.image,
                "system": name,
                "prompt": cfg.prompt,
                "raw_output": None,
                "prediction": None,
                "parse": None,
                "latency_s": None,
                "stage_latency_s": {"ocr": round(res.seconds, 4)},
                "usage": {},
                "finish_reason": None,
                "ocr": {"cache_hit": res.cache_hit, "n_lines": len(res.lines)},
                "error": None,
            }
            try:
                result = await client.chat(
                    messages, max_tokens=llm.max_tokens, temperature=llm.temperature
                )
            except FatalLLMError as exc:
                fatal.append(exc)
                return
            except LLMError as exc:
                row["error"] = f"{type(exc).__name__}: {exc.reason}"
                row["parse"] = {"method": "failed", "truncated": False, "duplicate_keys": [],
                                "conflicting_duplicate_keys": [], "error": row["error"]}  # fmt: skip
                row["stage_latency_s"]["llm"] = round(time.perf_counter() - t0 - res.seconds, 4)
            else:
                parsed = parse_model_output(result.text, finish_reason=result.finish_reason)
                row.update(
                    raw_output=result.text,
                    prediction=parsed.value,
                    parse=parsed.report.to_dict(),
                    usage=result.usage,
                    finish_reason=result.finish_reason,
                )
                row["stage_latency_s"]["llm"] = round(result.latency_s, 4)
            # end-to-end: the OCR's own time (also on cache hits) + the LLM call
            row["latency_s"] = round(
                row["stage_latency_s"]["ocr"] + row["stage_latency_s"]["llm"], 4
            )
            append_jsonl(out, row)

        try:
            await asyncio.gather(*(one(r) for r in todo))
        finally:
            ocr_pool.shutdown(wait=True)
    if fatal:
        raise fatal[0]
    return seen


def run_baseline(
    dataset: str | Path,
    out: str | Path,
    cfg: BaselineConfig,
    *,
    engine: OcrEngine | None = None,
    ocr_only: bool = False,
    limit: int | None = None,
    ceiling_out: str | Path | None = None,
) -> dict[str, Any]:
    """Run the baseline over a labels file; returns the OCR-ceiling report (also written)."""
    from data_tools.schema import load_schema

    dataset = Path(dataset)
    records = read_labels(dataset)[:limit] if limit else read_labels(dataset)
    schema = load_schema(cfg.schema) if cfg.schema and cfg.schema != "none" else None
    engine = engine or PaddleOcrEngine(cfg.ocr)
    cache = OcrCache(cfg.ocr.cache_dir, cfg.ocr.identity()) if cfg.ocr.cache_dir else None
    out = Path(out)
    seen = asyncio.run(_run(records, dataset, cfg, out, engine, cache, schema, ocr_only))
    labelled = [(r, lines) for r, lines in seen if r.fields]
    report = ocr_ceiling(sorted(labelled, key=lambda x: x[0].id), schema)
    base = str(ceiling_out) if ceiling_out else f"{out}.ocr_ceiling"
    atomic_write_text(f"{base}.json", json.dumps(report, ensure_ascii=False, indent=2) + "\n")
    atomic_write_text(f"{base}.md", ceiling_markdown(report))
    return report


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m inference.baseline", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument(
        "--dataset",
        required=True,
        help="labels.jsonl (canonical records; images resolved beside it)",
    )
    ap.add_argument("--out", required=True, help="predictions.jsonl (appended; a rerun resumes)")
    ap.add_argument(
        "--llm-url",
        action="append",
        help="OpenAI-compatible base URL ending in /v1; repeat for more servers",
    )
    ap.add_argument("--llm-model", help=f"model name at the endpoint (default {DEFAULT_MODEL})")
    ap.add_argument(
        "--config", default=str(DEFAULT_CONFIG), help="baseline YAML (configs/eval/baseline.yaml)"
    )
    ap.add_argument(
        "--prompt", help="the KIE prompt to answer, e.g. 'OCR:{}' or 'OCR:{\"发票号码\":\"\"}'"
    )
    ap.add_argument("--ocr-preset", choices=("small-onnx", "server"), help="PP-OCR models")
    ap.add_argument("--ocr-device", help="cpu | gpu:0")
    ap.add_argument("--ocr-cache", help="OCR cache folder ('' = no cache)")
    ap.add_argument("--concurrency", type=int, help="LLM requests in flight")
    ap.add_argument("--limit", type=int, help="first N documents only")
    ap.add_argument(
        "--ocr-only", action="store_true", help="run the OCR stage and the OCR-ceiling report only"
    )
    ap.add_argument(
        "--ceiling-out", help="OCR-ceiling report path without suffix (default: <out>.ocr_ceiling)"
    )
    return ap  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        cfg = BaselineConfig.from_yaml(args.config) if args.config else BaselineConfig()
        if args.llm_url:
            cfg.llm.base_urls = args.llm_url
        if args.llm_model:
            cfg.llm.model = args.llm_model
        if args.prompt:
            cfg.prompt = args.prompt
        if args.ocr_preset:
            cfg.ocr.preset = args.ocr_preset
        if args.ocr_device:
            cfg.ocr.device = args.ocr_device
        if args.ocr_cache is not None:
            cfg.ocr.cache_dir = args.ocr_cache
        if args.concurrency:
            cfg.llm.concurrency = args.concurrency
        report = run_baseline(
            args.dataset, args.out, cfg, ocr_only=args.ocr_only, limit=args.limit,
            ceiling_out=args.ceiling_out,
        )  # fmt: skip
    except (FileNotFoundError, ValueError, FatalLLMError) as exc:
        log.error("%s", exc)
        return 2
    o = report["overall"]
    if o["n"]:
        log.info(
            "OCR ceiling: %d/%d gold values occur in the OCR text (%.3f)",
            o["found"],
            o["n"],
            o["share"],
        )
    if not args.ocr_only:
        log.info("predictions: %s", args.out)
    log.debug("config: %s", asdict(cfg))
    return 0


if __name__ == "__main__":
    sys.exit(main())
