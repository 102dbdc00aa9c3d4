"""Turn a training output into a model dir that PaddleX, transformers and vLLM load.

    python -m training.export --ckpt DIR --base-model DIR --out DIR \\
        [--model-name PaddleOCR-VL-0.9B] [--verify-image IMG | --no-verify] [--force]

--ckpt is a run's output_dir (final weights at its root, else its newest
checkpoint-N) or one checkpoint-N dir, from ERNIEKit (`save_to_hf`), PaddleFormers
(unified safetensors checkpoints) or the PyTorch route (transformers saves the hub key
names; LoRA is merged into the output_dir at the end). The result has:

- one `model.safetensors`: shards merged, no index file (PaddleX loads only that exact
  name, and a leftover `model.safetensors.index.json` wins over it);
- LoRA merged into full weights (`W += scaling * (A @ B)^T`, Paddle's LoRA layout);
- tensors the trainers do not save (the SigLIP pooling `head.*` PaddleX builds)
  copied from the base model;
- `config.json`, `chat_template.jinja`, tokenizer, preprocessor and generation
  configs from the base model (the deployable versions: PaddleFormers re-saves
  tokenizer_config.json without `add_bos_token: false`, which would make PaddleX
  prepend `<s>`), the checkpoint's copies used only where the base has none;
- `inference.yml` naming the model (`Global.model_name`) for PaddleX;
- `export.json`: where every file and tensor came from.

It then loads the dir in PaddleX (`engine="paddle_dynamic"`) and predicts one image.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from data_tools.paddleocr_vl import MODEL_NAME
from training.preflight import checkpoints

if TYPE_CHECKING:  # numpy is imported where tensors are converted: `--help` stays fast
    import numpy as np

log = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = MODEL_NAME
DEPLOY_FILES = (
    "chat_template.jinja",
    "tokenizer.model",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "preprocessor_config.json",
    "generation_config.json",
)
ARCH_KEYS = (
    "model_type",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "vocab_size",
)
_DTYPES = {"F32": "float32", "F16": "float16", "BF16": "uint16", "I64": "int64", "I32": "int32"}


class ExportError(RuntimeError):
    pass


# ---------------------------------------------------------------- raw safetensors


@dataclass
class RawTensor:
    dtype: str  # safetensors dtype name: F32, BF16, ...
    shape: tuple[int, ...]
    data: bytes

    def to_float32(self) -> np.ndarray:
        import numpy as np

        if self.dtype == "BF16":
            bits = np.frombuffer(self.data, dtype=np.uint16).astype(np.uint32) << 16
            return bits.view(np.float32).reshape(self.shape)
        if self.dtype not in _DTYPES:
            raise ExportError(f"cannot do arithmetic on {self.dtype} tensors")
        return (
            np.frombuffer(self.data, dtype=_DTYPES[self.dtype])
            .astype(np.float32)
            .reshape(self.shape)
        )

    @classmethod
    def from_float32(cls, arr: np.ndarray, dtype: str) -> RawTensor:
        import numpy as np

        arr = np.ascontiguousarray(arr, dtype=np.float32)
        if dtype == "BF16":  # round to nearest even
            bits = arr.view(np.uint32)
            rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
            return cls("BF16", arr.shape, rounded.astype(np.uint16).tobytes())
        return cls(dtype, arr.shape, arr.astype(_DTYPES[dtype]).tobytes())


def read_safetensors(path: Path) -> dict[str, RawTensor]:
    """All tensors of one file as raw bytes (any dtype, bf16 included)."""
    with path.open("rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
        body = f.read()
    out = {}
    for key, meta in header.items():
        if key == "__metadata__":
            continue
        start, end = meta["data_offsets"]
        out[key] = RawTensor(meta["dtype"], tuple(meta["shape"]), body[start:end])
    return out


def write_safetensors(path: Path, tensors: dict[str, RawTensor], metadata: dict[str, str]) -> None:
    header: dict[str, Any] = {"__metadata__": metadata}
    offset = 0
    for key in sorted(tensors):
        t = tensors[key]
        header[key] = {
            "dtype": t.dtype,
            "shape": list(t.shape),
            "data_offsets": [offset, offset + len(t.data)],
        }
        offset += len(t.data)
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with path.open("wb") as f:
        f.write(len(blob).to_bytes(8, "little"))
        f.write(blob)
        for key in sorted(tensors):
            f.write(tensors[key].data)


# ---------------------------------------------------------------- locating weights


def weight_files(d: Path, prefix: str) -> list[Path]:
    """`prefix.safetensors`, or the shards its index lists, or `prefix-*-of-*.safetensors`."""
    single = d / f"{prefix}.safetensors"
    index = d / f"{prefix}.safetensors.index.json"
    if index.is_file():
        names = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        missing = [n for n in names if not (d / n).is_file()]
        if missing:
            raise ExportError(f"{index} lists missing shard(s): {', '.join(missing)}")
        return [d / n for n in names]
    if single.is_file():
        return [single]
    return sorted(d.glob(f"{prefix}-*-of-*.safetensors"))


def resolve_checkpoint(ckpt: Path) -> Path:
    """The dir holding the weights to export: ckpt itself, else its newest checkpoint-N."""
    if weight_files(ckpt, "model") or weight_files(ckpt, "peft_model"):
        return ckpt
    found = checkpoints(ckpt)
    if found:
        log.info("no final weights in %s; exporting its newest checkpoint %s", ckpt, found[-1].name)
        return resolve_checkpoint(found[-1])
    if (ckpt / "adapter_model.safetensors").is_file():
        raise ExportError(
            f"{ckpt} holds a peft LoRA adapter (a PyTorch-route checkpoint); the run merges "
            "LoRA into full weights in its output_dir when it finishes: export the output_dir, "
            "or finish the run with --resume"
        )
    if (ckpt / "model_state").is_dir() or list(ckpt.glob("**/*.distcp")):
        raise ExportError(
            f"{ckpt} holds a flex_checkpoint (*.distcp), which export cannot read: train with "
            "unified_checkpoint: true and save_checkpoint_format: unified_checkpoint (our recipes "
            "do), or export the run's final output_dir"
        )
    raise ExportError(
        f"{ckpt}: no model*.safetensors or peft_model*.safetensors and no checkpoint-N dir"
    )


def load_weights(files: Iterable[Path]) -> dict[str, RawTensor]:
    tensors: dict[str, RawTensor] = {}
    for f in files:
        part = read_safetensors(f)
        dup = set(part) & set(tensors)
        if dup:
            raise ExportError(f"{f}: tensors also in another shard: {sorted(dup)[:5]}")
        tensors.update(part)
    return tensors


# ---------------------------------------------------------------- LoRA


def lora_scaling(config: dict[str, Any]) -> float:
    if "scaling" in config:
        return float(config["scaling"])
    r = int(config["r"])
    alpha = float(config.get("lora_alpha", r))
    return alpha / math.sqrt(r) if config.get("rslora") else alpha / r


def merge_lora(
    base: dict[str, RawTensor], adapter: dict[str, RawTensor], scaling: float
) -> tuple[dict[str, RawTensor], list[str]]:
    """W (PyTorch layout [out, in]) += scaling * (A[in, r] @ B[r, out])^T; other adapter
    tensors (trainable modules) replace the base's."""
    merged = dict(base)
    done = []
    for key in sorted(adapter):
        if key.endswith(".lora_B"):
            continue
        if key.endswith(".lora_A"):
            stem = key[: -len(".lora_A")]
            target = f"{stem}.weight"
            if target not in base or f"{stem}.lora_B" not in adapter:
                raise ExportError(f"LoRA {stem}: no base tensor {target} or no lora_B")
            w = base[target]
            a = adapter[key].to_float32()
            b = adapter[f"{stem}.lora_B"].to_float32()
            delta = (a @ b).T * scaling
            if delta.shape != w.shape:
                raise ExportError(
                    f"LoRA {stem}: delta {delta.shape} does not fit {target} {w.shape}"
                )
            merged[target] = RawTensor.from_float32(w.to_float32() + delta, w.dtype)
            done.append(target)
        else:
            if key in base and adapter[key].shape != base[key].shape:
                raise ExportError(
                    f"adapter tensor {key} {adapter[key].shape} != base {base[key].shape}"
                )
            merged[key] = adapter[key]
    return merged, done


# ---------------------------------------------------------------- export


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def check_architecture(ckpt_dir: Path, base_config: dict[str, Any]) -> None:
    cfg = _read_json(ckpt_dir / "config.json")
    if not cfg:
        return
    diff = [
        f"{k}: checkpoint {cfg[k]!r} vs base {base_config.get(k)!r}"
        for k in ARCH_KEYS
        if k in cfg and k in base_config and cfg[k] != base_config[k]
    ]
    if diff:
        raise ExportError(
            f"{ckpt_dir}/config.json does not describe the base model's architecture "
            f"(wrong --base-model?): {'; '.join(diff)}"
        )


def inference_yml(model_name: str, base_yml: Path) -> str:
    """The base model's inference.yml with Global.model_name set (or a minimal one)."""
    data: dict[str, Any] = {}
    if base_yml.is_file():
        data = yaml.safe_load(base_yml.read_text(encoding="utf-8")) or {}
    data.setdefault("Global", {})["model_name"] = model_name
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def export(
    ckpt: Path,
    base_model: Path,
    out: Path,
    *,
    model_name: str = DEFAULT_MODEL_NAME,
    force: bool = False,
) -> dict[str, Any]:
    """Write the deployable dir (atomically: temp dir, then rename); returns the manifest."""
    ckpt, base_model, out = Path(ckpt).absolute(), Path(base_model).absolute(), Path(out).absolute()
    if out.exists() and any(out.iterdir()) and not force:
        raise ExportError(f"{out} exists and is not empty; pass --force to replace it")
    base_files = weight_files(base_model, "model")
    if not (base_model / "config.json").is_file() or not base_files:
        raise ExportError(
            f"{base_model}: not a model dir (config.json and model*.safetensors needed)"
        )
    base_config = _read_json(base_model / "config.json")
    src = resolve_checkpoint(ckpt)
    check_architecture(src, base_config)
    base = load_weights(base_files)

    full_files = weight_files(src, "model")
    lora_files = weight_files(src, "peft_model")
    manifest: dict[str, Any] = {
        "exported": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "checkpoint": str(src),
        "base_model": str(base_model),
        "model_name": model_name,
    }
    if full_files:
        trained = load_weights(full_files)
        foreign = sorted(set(trained) - set(base))
        if len(foreign) > len(trained) // 2:
            raise ExportError(
                f"{src}: most tensor names ({foreign[:3]}...) are not the base model's hub names; "
                "train with save_to_hf: true (ERNIEKit) or unified_checkpoint (PaddleFormers)"
            )
        if foreign:
            raise ExportError(f"{src}: tensors not in the base model: {foreign[:10]}")
        bad = [k for k in trained if trained[k].shape != base[k].shape]
        if bad:
            raise ExportError(f"{src}: shapes differ from the base model for {bad[:10]}")
        filled = sorted(set(base) - set(trained))
        tensors = {**{k: base[k] for k in filled}, **trained}
        manifest.update(kind="full", shards=[f.name for f in full_files], filled_from_base=filled)
    elif lora_files:
        lora_cfg = _read_json(src / "lora_config.json")
        if not lora_cfg:
            raise ExportError(f"{src}: peft_model weights without lora_config.json")
        scaling = lora_scaling(lora_cfg)
        tensors, merged = merge_lora(base, load_weights(lora_files), scaling)
        manifest.update(
            kind="lora",
            shards=[f.name for f in lora_files],
            lora_scaling=scaling,
            lora_merged=merged,
        )
    else:  # resolve_checkpoint guarantees one of them
        raise ExportError(f"{src}: no weights")

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        write_safetensors(tmp / "model.safetensors", tensors, {"format": "pt"})
        files: dict[str, str] = {}
        shutil.copy2(base_model / "config.json", tmp / "config.json")
        files["config.json"] = "base"
        differing = []
        for name in DEPLOY_FILES:
            if (base_model / name).is_file():
                shutil.copy2(base_model / name, tmp / name)
                files[name] = "base"
                theirs = src / name
                if theirs.is_file() and theirs.read_bytes() != (base_model / name).read_bytes():
                    differing.append(name)
            elif (src / name).is_file():
                shutil.copy2(src / name, tmp / name)
                files[name] = "checkpoint"
        for py in sorted(base_model.glob("*.py")):  # remote code for trust_remote_code loaders
            shutil.copy2(py, tmp / py.name)
            files[py.name] = "base"
        (tmp / "inference.yml").write_text(
            inference_yml(model_name, base_model / "inference.yml"), encoding="utf-8"
        )
        files["inference.yml"] = "written"
        if "chat_template.jinja" not in files:
            raise ExportError(f"neither {base_model} nor {src} has chat_template.jinja")
        manifest.update(
            files=files, checkpoint_files_differing_from_base=differing, tensors=len(tensors)
        )
        (tmp / "export.json").write_text(
            json.dumps(manifest, ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
        )
        tmp.chmod(0o755)
        if out.exists():
            shutil.rmtree(out)
        tmp.replace(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    if differing:
        log.warning(
            "checkpoint copies of %s differ from the base model's; used the base's",
            ", ".join(differing),
        )
    log.info("exported %s (%s, %d tensors) to %s", src, manifest["kind"], len(tensors), out)
    return manifest


def verify_with_paddlex(
    model_dir: Path,
    image: Path | None = None,
    *,
    model_name: str = DEFAULT_MODEL_NAME,
    query: str = "OCR:{}",
    max_new_tokens: int = 16,
) -> str:
    """Load `model_dir` in PaddleX (dynamic graph, CPU unless a GPU build is present) and
    predict one image; returns the generated text."""
    from paddlex import create_model

    with tempfile.TemporaryDirectory() as td:
        if image is None:
            from PIL import Image

            image = Path(td) / "blank.png"
            Image.new("RGB", (448, 336), "white").save(image)
        model = create_model(model_name, model_dir=str(model_dir), engine="paddle_dynamic")
        results = list(
            model.predict({"image": str(image), "query": query}, max_new_tokens=max_new_tokens)
        )
    if len(results) != 1 or not isinstance(results[0]["result"], str):
        raise ExportError(f"PaddleX returned {results!r} for {image}")
    return results[0]["result"]


_NAME_RE = re.compile(r"^PaddleOCR-VL")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.export", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--ckpt", required=True, type=Path, help="run output_dir or a checkpoint-N dir"
    )
    parser.add_argument(
        "--base-model", required=True, type=Path, help="the model the run started from"
    )
    parser.add_argument("--out", required=True, type=Path, help="deployable model dir to write")
    parser.add_argument(
        "--model-name", default=DEFAULT_MODEL_NAME, help="PaddleX model name for inference.yml"
    )
    parser.add_argument(
        "--verify-image", type=Path, help="image for the PaddleX check (default: a blank page)"
    )
    parser.add_argument(
        "--no-verify", action="store_true", help="skip loading the result in PaddleX"
    )
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not _NAME_RE.match(args.model_name):
        print(
            f"error: --model-name {args.model_name!r} is not a PaddleOCR-VL model name",
            file=sys.stderr,
        )
        return 2
    try:
        manifest = export(
            args.ckpt, args.base_model, args.out, model_name=args.model_name, force=args.force
        )
    except ExportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"exported {manifest['kind']} weights from {manifest['checkpoint']} to {args.out}")
    if args.no_verify:
        return 0
    try:
        text = verify_with_paddlex(args.out, args.verify_image, model_name=args.model_name)
    except Exception as e:  # any loader failure means the dir is not deployable
        print(f"error: PaddleX could not load/predict with {args.out}: {e}", file=sys.stderr)
        return 1
    print(f"PaddleX loaded {args.out} and predicted: {text[:200]!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
