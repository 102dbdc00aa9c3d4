"""Checks before a training run, each failure a message that says what to do.

`run_preflight(recipe)` returns findings (ok / info / warning / error) and the
`max_steps` the data implies. Nothing here changes files or starts training.

The checks shared by every trainer live here (data contract, model dir, GPUs, disk,
port, output dir, steps); each trainer adds its own (`Trainer.preflight`: its
executable beside TRAIN_PY, eval settings, CPU settings). `max_steps` is computed
from the real token count of every sample: visual tokens of its image after
PaddleOCR-VL's `smart_resize` (the model's own pixel bounds), plus prompt and answer
tokens (the model's tokenizer), packed greedily up to `max_seq_len` as the trainer's
packer does.
"""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
import socket
import statistics
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data_tools.paddleocr_vl import EOS, MAX_PIXELS, MIN_PIXELS, prompt_text, visual_tokens
from data_tools.sft import (  # noqa: F401  (re-exported: the SFT checks live in data_tools.sft)
    SftExample,
    check_dataset_file,
    check_erniekit_record,
    check_paddleformers_record,
    detect_format,
    read_sft,
)
from training.recipe import Recipe
from training.trainers import Finding, Trainer

log = logging.getLogger(__name__)

LEVELS = ("ok", "info", "warning", "error")
MAX_LISTED = 10
MIN_BF16_CAPABILITY = 8.0  # Ampere (A100/A800) and newer


@dataclass
class PreflightResult:
    findings: list[Finding]
    samples: int | None = None
    max_steps: int | None = None  # computed from the data
    packs: PackStats | None = None

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "error"]

    @property
    def ok(self) -> bool:
        return not self.errors


# ---------------------------------------------------------------- dataset


def _listed(problems: list[str]) -> str:
    head = "\n    ".join(problems[:MAX_LISTED])
    more = f"\n    ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
    return f"\n    {head}{more}"


def file_format(path: Path, formats: tuple[str, ...]) -> str:
    """The SFT format of a file (its first record's), when the trainer reads several."""
    if len(formats) == 1:
        return formats[0]
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                try:
                    fmt = detect_format(json.loads(line))
                except json.JSONDecodeError:
                    break
                return fmt if fmt in formats else formats[0]
    return formats[0]


def check_data(
    r: Recipe, examples: list[SftExample] | None = None
) -> tuple[list[Finding], int | None]:
    """Every train file follows the trainer's SFT contract; fills `examples` when all do."""
    findings = []
    files = r.train_files()
    formats = r.trainer.data_formats
    if not files:
        return [Finding("error", "dataset", "config.train_dataset_path is not set")], None
    total = 0
    missing = False
    good: list[Path] = []
    for path in files:
        if not path.is_file():
            findings.append(
                Finding(
                    "error",
                    "dataset",
                    f"{path} not found; build it with python -m data_tools.build_dataset "
                    f"--format {formats[0]} (or override the recipe variable that points at it)",
                )
            )
            missing = True
            continue
        n, problems = check_dataset_file(path, file_format(path, formats))
        total += n
        if problems:
            findings.append(
                Finding(
                    "error", "dataset", f"{len(problems)} problem(s) in {path}:{_listed(problems)}"
                )
            )
        elif n == 0:
            findings.append(Finding("error", "dataset", f"{path} has no records"))
        else:
            good.append(path)
            findings.append(
                Finding("ok", "dataset", f"{path}: {n} records follow the SFT contract")
            )
    if examples is not None and len(good) == len(files):
        for path in good:
            examples.extend(ex for _, ex in read_sft(path))
    return findings, (None if missing else total)


def check_eval_files(r: Recipe, trainer: Trainer) -> list[Finding]:
    """do_eval is on: the eval files exist and follow the trainer's SFT contract."""
    findings = []
    for path in r.eval_files() or [Path("<eval_dataset_path unset>")]:
        if not path.is_file():
            findings.append(Finding("error", "dataset", f"do_eval is on but {path} is missing"))
            continue
        _, problems = check_dataset_file(path, file_format(path, trainer.data_formats))
        if problems:
            findings.append(
                Finding(
                    "error", "dataset", f"{len(problems)} problem(s) in {path}:{_listed(problems)}"
                )
            )
    return findings


# ---------------------------------------------------------------- model


def safetensors_params(model_dir: Path) -> int | None:
    """Number of parameters, from the safetensors headers (no tensor is read)."""
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for f in files:
        with f.open("rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        for key, meta in header.items():
            if key != "__metadata__":
                total += math.prod(meta["shape"])
    return total


def check_model(r: Recipe) -> list[Finding]:
    d = r.model_dir
    if not d.is_dir():
        return [
            Finding(
                "error",
                "model",
                f"base model dir {d} not found; download PaddlePaddle/PaddleOCR-VL there or "
                "override the recipe variable that points at it",
            )
        ]
    findings = []
    need = ["config.json", "tokenizer_config.json", "preprocessor_config.json"]
    missing = [n for n in need if not (d / n).is_file()]
    if not (d / "tokenizer.model").is_file() and not (d / "tokenizer.json").is_file():
        missing.append("tokenizer.model")
    if not list(d.glob("*.safetensors")):
        missing.append("model.safetensors")
    if missing:
        findings.append(Finding("error", "model", f"{d} lacks {', '.join(missing)}"))
        return findings
    config = json.loads((d / "config.json").read_text(encoding="utf-8"))
    if config.get("model_type") != "paddleocr_vl":
        findings.append(
            Finding(
                "error",
                "model",
                f"{d}/config.json model_type is {config.get('model_type')!r}, not paddleocr_vl",
            )
        )
    if r.device == "cpu" and config.get("fuse_rms_norm", True) is not False:
        findings.append(
            Finding(
                "warning",
                "model",
                f"{d}/config.json has no fuse_rms_norm: false; PaddleFormers on CPU needs the unfused RMSNorm",
            )
        )
    findings.append(
        Finding("ok", "model", f"{d} has config, weights, tokenizer and preprocessor files")
    )
    return findings


# ---------------------------------------------------------------- machine


def gpu_inventory() -> list[dict[str, Any]] | None:
    """GPUs from nvidia-smi (None when nvidia-smi is missing or fails)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [
                exe,
                "--query-gpu=index,name,memory.total,compute_cap",
                "--format=csv,noheader,nounits",
            ],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (subprocess.SubprocessError, OSError):
        return None
    gpus = []
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 4:
            try:
                gpus.append(
                    {
                        "index": parts[0],
                        "name": parts[1],
                        "memory_mib": float(parts[2]),
                        "capability": float(parts[3]),
                    }
                )
            except ValueError:
                continue
    return gpus


def wants_bf16(config: dict[str, Any]) -> bool:
    return str(config.get("compute_type", "")).lower() == "bf16" or bool(config.get("bf16"))


def check_device(r: Recipe, gpus: list[dict[str, Any]] | None = None) -> list[Finding]:
    c = r.config
    if r.device == "cpu":
        return []  # the trainer checks its own CPU settings

    gpus = gpu_inventory() if gpus is None else gpus
    if not gpus:
        return [
            Finding(
                "error",
                "device",
                "no NVIDIA GPU found (nvidia-smi missing or lists none); this recipe needs a "
                f"GPU box: see {r.trainer.setup}, or use configs/train/cpu_tiny.yaml",
            )
        ]
    by_index = {g["index"]: g for g in gpus}
    wanted = [g.strip() for g in r.gpus.split(",") if g.strip()]
    absent = [g for g in wanted if g not in by_index]
    if absent:
        return [Finding("error", "device", f"gpus={r.gpus}: no GPU with index {', '.join(absent)}")]
    findings = []
    for g in (by_index[i] for i in wanted):
        if wants_bf16(c) and g["capability"] < MIN_BF16_CAPABILITY:
            findings.append(
                Finding(
                    "error",
                    "device",
                    f"GPU {g['index']} ({g['name']}) has compute capability {g['capability']}; bf16 "
                    f"needs >= {MIN_BF16_CAPABILITY} (A100/A800/H100/H200)",
                )
            )
        seq = int(c.get("max_seq_len", 0) or 0)
        if seq >= 16384 and g["memory_mib"] < 70 * 1024:
            findings.append(
                Finding(
                    "warning",
                    "device",
                    f"GPU {g['index']} ({g['name']}) has {g['memory_mib'] / 1024:.0f} GiB; the 16k "
                    "recipe was sized for 80 GB: lower packing_size/max_seq_len and raise "
                    "gradient_accumulation_steps if it runs out of memory",
                )
            )
    if not findings:
        names = ", ".join(f"{by_index[i]['name']} (cc {by_index[i]['capability']})" for i in wanted)
        findings.append(Finding("ok", "device", f"{len(wanted)} GPU(s): {names}"))
    return findings


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def check_port(r: Recipe) -> list[Finding]:
    if r.device == "cpu":
        return [Finding("info", "port", "CPU route runs in-process: no launcher port needed")]
    if port_free(r.master_port):
        return [Finding("ok", "port", f"master_port {r.master_port} is free")]
    return [
        Finding(
            "error",
            "port",
            f"master_port {r.master_port} is in use (paddle.distributed.launch defaults to 8080); "
            "pass master_port=<free port>",
        )
    ]


def estimate_checkpoint_bytes(r: Recipe, params: int, max_steps: int | None) -> int:
    """Bytes the run will write: kept checkpoints plus the final weights."""
    c = r.config
    lora = str(c.get("fine_tuning", "")).lower() == "lora"
    half = wants_bf16(c) or bool(c.get("fp16"))
    weight_bytes = 2 if half else 4
    per_param = weight_bytes if lora else weight_bytes + (4 if half else 0) + 8  # + master + Adam
    steps = max_steps or int(c.get("max_steps", 0) or 0)
    save_steps = int(c.get("save_steps", 0) or 0)
    n_saves = math.ceil(steps / save_steps) if steps > 0 and save_steps > 0 else 1
    limit = c.get("save_total_limit")
    if isinstance(limit, int) and limit > 0:
        n_saves = min(n_saves, limit)
    return params * (per_param * n_saves + weight_bytes)


def check_disk(r: Recipe, max_steps: int | None) -> list[Finding]:
    params = safetensors_params(r.model_dir) if r.model_dir.is_dir() else None
    if params is None:
        return [Finding("info", "disk", "base model not found: checkpoint size not estimated")]
    need = estimate_checkpoint_bytes(r, params, max_steps)
    probe = r.output_dir
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    gib = 1024**3
    msg = f"about {need / gib:.2f} GiB of checkpoints ({params / 1e6:.1f}M params); {free / gib:.1f} GiB free at {probe}"
    if free < need:
        return [Finding("error", "disk", msg + ": free space or lower save_total_limit")]
    return [Finding("ok", "disk", msg)]


# ---------------------------------------------------------------- steps


@dataclass
class PackStats:
    """What the data costs in tokens, and how the trainer's packer groups it."""

    samples: int
    mean_tokens: float
    max_tokens: int
    tokens_source: str
    max_seq_len: int | None  # None: the trainer does not pack
    packing_size: int | None
    packs: int  # == samples when not packing
    overflow: int  # samples longer than max_seq_len

    @property
    def samples_per_pack(self) -> float:
        return self.samples / self.packs if self.packs else 0.0


class TokenCounter:
    """Tokens of one SFT example as the model sees it: template, image, prompt, answer.

    Visual tokens follow `smart_resize` with the model's own pixel bounds
    (preprocessor_config.json); text tokens come from the model's tokenizer.json,
    or, without one, an estimate (one token per non-ASCII character, one per three
    ASCII characters), which is said in the findings.
    """

    def __init__(self, model_dir: Path) -> None:
        pre = model_dir / "preprocessor_config.json"
        cfg = json.loads(pre.read_text(encoding="utf-8")) if pre.is_file() else {}
        self.pixels = {
            "min_pixels": int(cfg.get("min_pixels", MIN_PIXELS)),
            "max_pixels": int(cfg.get("max_pixels", MAX_PIXELS)),
        }
        if "patch_size" in cfg:
            self.pixels["patch_size"] = int(cfg["patch_size"])
        if "merge_size" in cfg:
            self.pixels["merge_size"] = int(cfg["merge_size"])
        self._tok = None
        self.source = "estimated text tokens (no tokenizer.json in the model dir)"
        tok_file = model_dir / "tokenizer.json"
        if tok_file.is_file():
            try:
                from tokenizers import Tokenizer

                self._tok = Tokenizer.from_file(str(tok_file))
                self.source = f"text tokens from {tok_file}"
            except Exception as e:  # a tokenizer the library cannot read: estimate
                log.debug("cannot load %s: %s", tok_file, e)
        self._sizes: dict[str, int] = {}

    def text(self, texts: list[str]) -> list[int]:
        if self._tok is not None:
            return [len(e.ids) for e in self._tok.encode_batch(texts, add_special_tokens=False)]
        return [
            sum(1 for ch in t if ord(ch) > 127)
            + math.ceil(sum(1 for ch in t if ord(ch) <= 127) / 3)
            for t in texts
        ]

    def image(self, path: str) -> int:
        if path not in self._sizes:
            from PIL import Image

            with Image.open(path) as im:  # reads the header only
                w, h = im.size
            self._sizes[path] = visual_tokens(h, w, **self.pixels)
        return self._sizes[path]

    def count(self, examples: list[SftExample]) -> list[int]:
        texts: list[str] = []
        for ex in examples:
            first, *rest = ex.turns
            parts = [prompt_text(first[0], image_tokens=0), first[1] + EOS]
            for prompt, answer in rest:
                parts += [f"User: {prompt}\nAssistant: ", answer + EOS]
            texts.append("".join(parts))
        return [n + self.image(ex.image) for n, ex in zip(self.text(texts), examples, strict=True)]


def greedy_packs(lengths: list[int], max_seq_len: int, packing_size: int) -> tuple[int, int]:
    """(packs, samples over max_seq_len): samples in order, a pack closes when the next one
    would overflow `max_seq_len` or it holds `packing_size` samples (ERNIEKit's packer)."""
    packs = overflow = 0
    used = n = 0
    for length in lengths:
        if length > max_seq_len:
            overflow += 1
        if n and (used + length > max_seq_len or n >= packing_size):
            packs += 1
            used = n = 0
        used += length
        n += 1
    return packs + (1 if n else 0), overflow


def pack_stats(r: Recipe, examples: list[SftExample]) -> PackStats:
    counter = TokenCounter(r.model_dir)
    lengths = counter.count(examples)
    packing = r.trainer.packing(r)
    seq = int(r.config.get("max_seq_len", 0) or 0) or None
    if packing is None:
        packs, size = len(lengths), None
        overflow = sum(1 for n in lengths if seq and n > seq)
    else:
        seq, size = packing
        packs, overflow = greedy_packs(lengths, seq, size)
    return PackStats(
        samples=len(lengths),
        mean_tokens=statistics.fmean(lengths),
        max_tokens=max(lengths),
        tokens_source=counter.source,
        max_seq_len=seq,
        packing_size=size,
        packs=packs,
        overflow=overflow,
    )


def check_steps(
    r: Recipe, samples: int | None, examples: list[SftExample] | None = None
) -> tuple[list[Finding], int | None, PackStats | None]:
    """max_steps from the data: samples x epochs / samples per step, packing measured."""
    configured = r.config.get("max_steps", -1)
    if samples is None:
        if configured == "auto":
            return (
                [
                    Finding(
                        "info", "max_steps", "max_steps=auto is computed once the dataset exists"
                    )
                ],
                None,
                None,
            )
        return [], None, None
    findings: list[Finding] = []
    stats = None
    if examples:
        try:
            stats = pack_stats(r, examples)
        except (OSError, ValueError) as e:  # an image that will not open: the data check says so
            findings.append(Finding("warning", "tokens", f"token count skipped: {e}"))
    if stats is not None:
        findings.append(
            Finding(
                "info",
                "tokens",
                f"{stats.samples} samples, {stats.mean_tokens:.0f} tokens each on average "
                f"(max {stats.max_tokens}; visual tokens after smart_resize, {stats.tokens_source})",
            )
        )
        if stats.overflow:
            findings.append(
                Finding(
                    "warning",
                    "tokens",
                    f"{stats.overflow} sample(s) are longer than max_seq_len {stats.max_seq_len}: "
                    "they are truncated or dropped; raise max_seq_len or lower max_pixels",
                )
            )
        if stats.packing_size is not None:
            level = "warning" if stats.samples_per_pack < 0.9 * stats.packing_size else "ok"
            advice = (
                f": packing_size {stats.packing_size} samples do not fit; max_steps is computed "
                "from the real packs"
                if level == "warning"
                else ""
            )
            findings.append(
                Finding(
                    level,
                    "packing",
                    f"greedy packing to {stats.max_seq_len} tokens: {stats.packs} packs, "
                    f"{stats.samples_per_pack:.2f} samples per pack (packing_size "
                    f"{stats.packing_size}){advice}",
                )
            )
    epochs = float(r.config.get("num_train_epochs", 1) or 1)
    plan = r.trainer.samples_per_step(r, stats.samples_per_pack if stats else None)
    computed = r.trainer.total_steps(samples, epochs, plan.samples_per_step)
    per_epoch = max(1, math.ceil(samples / plan.samples_per_step))
    how = f"{samples} samples x {epochs:g} epochs / ({plan.formula}) = {computed}"
    if computed != max(1, math.ceil(samples * epochs / plan.samples_per_step)):
        how = (
            f"{epochs:g} epochs x {per_epoch} steps each ({samples} samples / ({plan.formula}), "
            f"the last batch of an epoch short) = {computed}"
        )
    if stats is not None:
        tokens_per_step = stats.mean_tokens * plan.samples_per_step
        exact = samples / plan.samples_per_step  # a stream's epochs need not end on a step
        per_epoch_text = f"{per_epoch}" if computed == epochs * per_epoch else f"{exact:.2f}"
        findings.append(
            Finding(
                "info",
                "steps",
                f"{per_epoch_text} steps per epoch, about {tokens_per_step:,.0f} tokens per step",
            )
        )
    warmup = r.config.get("warmup_steps")
    if configured == "auto" and isinstance(warmup, int) and warmup > 0:
        findings.append(
            Finding(
                "warning",
                "warmup",
                f"warmup_steps={warmup} stays fixed while max_steps is computed ({computed}, "
                f"{warmup / computed:.1%} of the run): set warmup_ratio instead",
            )
        )
    if configured == "auto":
        return (
            [
                *findings,
                Finding("ok", "max_steps", f"max_steps=auto -> {computed} ({how})"),
            ],
            computed,
            stats,
        )
    if configured is None or int(configured) <= 0:
        return (
            [
                *findings,
                Finding(
                    "info", "max_steps", f"max_steps unset: the tool uses num_train_epochs ({how})"
                ),
            ],
            computed,
            stats,
        )
    configured = int(configured)
    ratio = configured / computed
    if 0.9 <= ratio <= 1.1:
        return (
            [
                *findings,
                Finding("ok", "max_steps", f"max_steps={configured} matches the data ({how})"),
            ],
            computed,
            stats,
        )
    return (
        [
            *findings,
            Finding(
                "warning",
                "max_steps",
                f"max_steps={configured} but the data gives {how}: the run covers {ratio * epochs:.2f} "
                "epochs; pass max_steps=auto to use the computed value",
            ),
        ],
        computed,
        stats,
    )


# ---------------------------------------------------------------- output dir


CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


def checkpoints(output_dir: Path) -> list[Path]:
    """checkpoint-N dirs, oldest first."""
    if not output_dir.is_dir():
        return []
    found = [
        (int(m.group(1)), p)
        for p in output_dir.iterdir()
        if (m := CHECKPOINT_RE.match(p.name)) and p.is_dir()
    ]
    return [p for _, p in sorted(found)]


def check_output(r: Recipe, resume: bool) -> list[Finding]:
    ckpts = checkpoints(r.output_dir)
    if resume:
        if not ckpts:
            return [Finding("error", "output", f"--resume: no checkpoint-N in {r.output_dir}")]
        return [Finding("ok", "output", f"resuming from {ckpts[-1]}")]
    if ckpts and not r.config.get("overwrite_output_dir"):
        return [
            Finding(
                "error",
                "output",
                f"{r.output_dir} already has {ckpts[-1].name}: pass --resume to continue it, "
                "overwrite_output_dir=true to start over, or run_dir=<new dir>",
            )
        ]
    refused = r.trainer.output_refused(r)
    if refused and r.output_dir.is_dir() and any(r.output_dir.iterdir()):
        return [
            Finding(
                "error",
                "output",
                f"{r.output_dir} is not empty and has no checkpoint; {refused}: "
                "choose a new run_dir or empty it",
            )
        ]
    return [Finding("ok", "output", f"output_dir {r.output_dir}")]


# ---------------------------------------------------------------- all


def run_preflight(
    r: Recipe,
    *,
    resume: bool = False,
    gpus: list[dict[str, Any]] | None = None,
    python: str | None = None,
) -> PreflightResult:
    """All checks; `python` is the interpreter that runs the tool (default: this one)."""
    python = python or sys.executable
    findings: list[Finding] = []
    examples: list[SftExample] = []
    data, samples = check_data(r, examples)
    findings += data
    findings += check_model(r)
    findings += check_device(r, gpus)
    findings += r.trainer.preflight(r, python)
    steps, computed, packs = check_steps(r, samples, examples if samples else None)
    findings += steps
    findings += check_disk(r, computed if r.config.get("max_steps") == "auto" else None)
    findings += check_port(r)
    findings += check_output(r, resume)
    for f in findings:
        log.debug("%s", f)
    return PreflightResult(findings=findings, samples=samples, max_steps=computed, packs=packs)
