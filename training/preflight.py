"""Checks before a training run, each failure a message that says what to do.

`run_preflight(recipe)` returns findings (ok / info / warning / error) and the
`max_steps` the data implies. Nothing here changes files or starts training.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import re
import shutil
import socket
import struct
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from data_tools.sft import (  # noqa: F401  (re-exported: the SFT checks live in data_tools.sft)
    check_dataset_file,
    check_erniekit_record,
    check_paddleformers_record,
)
from training.recipe import Recipe

log = logging.getLogger(__name__)

LEVELS = ("ok", "info", "warning", "error")
MAX_LISTED = 10
MIN_BF16_CAPABILITY = 8.0  # Ampere (A100/A800) and newer


@dataclass
class Finding:
    level: str
    check: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    def __str__(self) -> str:
        return f"[{self.level.upper():7}] {self.check}: {self.message}"


@dataclass
class PreflightResult:
    findings: list[Finding]
    samples: int | None = None
    max_steps: int | None = None  # computed from the data

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


def check_data(r: Recipe) -> tuple[list[Finding], int | None]:
    findings = []
    files = r.train_files()
    if not files:
        return [Finding("error", "dataset", "config.train_dataset_path is not set")], None
    total = 0
    missing = False
    for path in files:
        if not path.is_file():
            findings.append(
                Finding(
                    "error",
                    "dataset",
                    f"{path} not found; build it with python -m data_tools.build_dataset "
                    f"--format {r.launcher} (or override the recipe variable that points at it)",
                )
            )
            missing = True
            continue
        n, problems = check_dataset_file(path, r.launcher)
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
            findings.append(
                Finding("ok", "dataset", f"{path}: {n} records follow the SFT contract")
            )
    if r.launcher == "erniekit" and (r.config.get("eval_dataset_path") or r.config.get("do_eval")):
        findings.append(
            Finding(
                "warning",
                "dataset",
                "ERNIEKit's OCR-VL-SFT workflow ignores eval_dataset_path/do_eval; score the "
                "exported model with make eval instead",
            )
        )
    elif r.launcher == "paddleformers" and r.config.get("do_eval"):
        for path in r.eval_files() or [Path("<eval_dataset_path unset>")]:
            if not path.is_file():
                findings.append(Finding("error", "dataset", f"do_eval is on but {path} is missing"))
            else:
                _, problems = check_dataset_file(path, r.launcher)
                if problems:
                    findings.append(
                        Finding(
                            "error",
                            "dataset",
                            f"{len(problems)} problem(s) in {path}:{_listed(problems)}",
                        )
                    )
    return findings, (None if missing else total)


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
        findings = []
        if str(c.get("device", "")).lower() != "cpu":
            findings.append(Finding("error", "device", "CPU route: set config.device: cpu"))
        if wants_bf16(c) or c.get("fp16"):
            findings.append(
                Finding(
                    "error",
                    "device",
                    "CPU route: set compute_type: float32 (PaddleFormers turns bf16 on unless "
                    "compute_type says otherwise; bf16: false alone is overridden)",
                )
            )
        if c.get("_attn_implementation", "eager") != "eager":
            findings.append(
                Finding("error", "device", "CPU route: set _attn_implementation: eager")
            )
        if not findings:
            findings.append(
                Finding("ok", "device", "CPU route (PaddleFormers launcher run in-process)")
            )
        return findings

    gpus = gpu_inventory() if gpus is None else gpus
    if not gpus:
        return [
            Finding(
                "error",
                "device",
                "no NVIDIA GPU found (nvidia-smi missing or lists none); this recipe needs a "
                "GPU box: see make setup-train-gpu, or use configs/train/cpu_tiny.yaml",
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


def check_tools(r: Recipe) -> list[Finding]:
    c = r.config
    findings = []
    if r.device == "gpu":
        exe = "erniekit" if r.launcher == "erniekit" else "paddleformers-cli"
        if shutil.which(exe) is None:
            findings.append(
                Finding(
                    "error",
                    "tools",
                    f"{exe} is not on PATH: run make setup-train-gpu and activate .venv-train-gpu",
                )
            )
    report_to = c.get("report_to", [])
    report_to = [report_to] if isinstance(report_to, str) else list(report_to or [])
    if (
        "tensorboard" in report_to
        and r.device == "cpu"
        and importlib.util.find_spec("tensorboard") is None
    ):
        # tensorboardX, or training.pf_compat's shim over tensorboard's event writer
        findings.append(
            Finding("error", "tools", "report_to: tensorboard needs tensorboard (or tensorboardX)")
        )
    if "tensorboard" not in report_to and r.launcher == "paddleformers":
        findings.append(
            Finding(
                "warning",
                "tools",
                "report_to has no tensorboard: python -m training.summary reads TensorBoard logs",
            )
        )
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


def steps_per_update(r: Recipe) -> tuple[int, str]:
    """Samples consumed per optimizer step, and the formula in words."""
    c = r.config
    g = r.n_devices
    accum = int(c.get("gradient_accumulation_steps", 1) or 1)
    if r.launcher == "erniekit":
        batch = int(c.get("batch_size", 1) or 1)
        packing = int(c.get("packing_size", 1) or 1) if c.get("packing") else 1
        return g * batch * accum * packing, (
            f"GPUs {g} x batch_size {batch} x gradient_accumulation_steps {accum} x packing_size {packing}"
        )
    batch = int(c.get("per_device_train_batch_size", 1) or 1)
    return g * batch * accum, (
        f"devices {g} x per_device_train_batch_size {batch} x gradient_accumulation_steps {accum}"
    )


def check_steps(r: Recipe, samples: int | None) -> tuple[list[Finding], int | None]:
    configured = r.config.get("max_steps", -1)
    if samples is None:
        if configured == "auto":
            return [
                Finding("info", "max_steps", "max_steps=auto is computed once the dataset exists")
            ], None
        return [], None
    epochs = float(r.config.get("num_train_epochs", 1) or 1)
    per_step, formula = steps_per_update(r)
    computed = max(1, math.ceil(samples * epochs / per_step))
    how = f"{samples} samples x {epochs:g} epochs / ({formula}) = {computed}"
    if configured == "auto":
        return [Finding("ok", "max_steps", f"max_steps=auto -> {computed} ({how})")], computed
    if configured is None or int(configured) <= 0:
        return [
            Finding("info", "max_steps", f"max_steps unset: the tool uses num_train_epochs ({how})")
        ], computed
    configured = int(configured)
    ratio = configured / computed
    if 0.9 <= ratio <= 1.1:
        return [
            Finding("ok", "max_steps", f"max_steps={configured} matches the data ({how})")
        ], computed
    return [
        Finding(
            "warning",
            "max_steps",
            f"max_steps={configured} but the data gives {how}: the run covers {ratio * epochs:.2f} "
            "epochs; pass max_steps=auto to use the computed value",
        )
    ], computed


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
    if r.output_dir.is_dir() and any(r.output_dir.iterdir()) and r.launcher == "erniekit":
        return [
            Finding(
                "error",
                "output",
                f"{r.output_dir} is not empty and has no checkpoint; ERNIEKit refuses it: "
                "choose a new run_dir or empty it",
            )
        ]
    return [Finding("ok", "output", f"output_dir {r.output_dir}")]


# ---------------------------------------------------------------- all


def run_preflight(
    r: Recipe, *, resume: bool = False, gpus: list[dict[str, Any]] | None = None
) -> PreflightResult:
    findings: list[Finding] = []
    data, samples = check_data(r)
    findings += data
    findings += check_model(r)
    findings += check_device(r, gpus)
    findings += check_tools(r)
    steps, computed = check_steps(r, samples)
    findings += steps
    findings += check_disk(r, computed if r.config.get("max_steps") == "auto" else None)
    findings += check_port(r)
    findings += check_output(r, resume)
    for f in findings:
        log.debug("%s", f)
    return PreflightResult(findings=findings, samples=samples, max_steps=computed)
