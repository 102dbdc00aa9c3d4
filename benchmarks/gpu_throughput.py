"""GPU throughput of PaddleOCR-VL-0.9B at its real size, with random weights (run in .venv-torch).

    .venv-torch/bin/python benchmarks/gpu_throughput.py [--device cuda] [--out results.jsonl]
    .venv-torch/bin/python benchmarks/gpu_throughput.py --tiny --device cpu     # seconds, tested

Speed does not depend on weight values, so no weights are needed: the model is built
from PaddleOCR-VL-0.9B's published config (`data_tools.paddleocr_vl.ARCH_0_9B`, the
tokenizer and processor files of `training.tiny_model`, the real pixel bounds) with
random initialisation. Two measurements, one JSON line each:

(a) `extract`: extraction through transformers (the `transformers` backend's calls:
    processor, then `generate`, greedy) at batch 1, 8 and 32 on one 2104x1560 invoice
    page, with a fixed output length (`min_new_tokens == max_new_tokens`): images/s,
    generated tokens/s, latency, peak memory.
(b) `sft_step`: the PyTorch SFT route's training step (`training.torch_sft.build_trainer`:
    its encoding, collator and transformers Trainer; full fine-tuning, bf16 autocast over
    float32 weights, gradient checkpointing, AdamW) on batches of invoice samples filling
    about 16k tokens: median s/step after warm-up, tokens/s, peak memory.

Sized to finish within 8 minutes on one H100/H200. `--tiny` runs the same code on the
tiny random model (2+2 layers, 64 visual tokens) for tests and CPU machines.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from data_tools.paddleocr_vl import (  # noqa: E402
    ARCH_0_9B,
    MAX_PIXELS,
    MIN_PIXELS,
    MODEL_NAME,
    prompt_text,
)

log = logging.getLogger("gpu_throughput")
PAGE = (2104, 1560)  # width, height of a full invoice photo
PROMPT = (
    'OCR:{"发票代码":"","发票号码":"","开票日期":"","购买方":{},"销售方":{},"价税合计（小写）":""}'
)
ANSWER = json.dumps(
    {
        "发票代码": "044031900111",
        "发票号码": "12345678",
        "开票日期": "2024年01月02日",
        "购买方": {"名称": "北京某某科技有限公司", "纳税人识别号": "91110108MA01ABCD2X"},
        "销售方": {"名称": "深圳某某贸易有限公司", "纳税人识别号": "91440300MA5FABCD1Y"},
        "价税合计（小写）": "¥1130.00",
    },
    ensure_ascii=False,
)


def emit(record: dict[str, Any], out: Path | None) -> None:
    line = json.dumps(record, ensure_ascii=False)
    print(line, flush=True)
    if out is not None:
        with out.open("a", encoding="utf-8") as f:
            f.write(line + "\n")


def model_dir(root: Path, tiny: bool) -> Path:
    """The tiny model's tokenizer and processor; config.json at the real size unless tiny."""
    from training.tiny_model import TinySpec, build_tiny_model, model_config, preprocessor_config

    d = build_tiny_model(root / "model")
    if tiny:
        return d
    full = dataclasses.replace(
        TinySpec(),
        **{k: v for k, v in ARCH_0_9B.items() if k != "vocab_size"},
        min_pixels=MIN_PIXELS,
        max_pixels=MAX_PIXELS,
    )
    tiny_cfg = json.loads((d / "config.json").read_text(encoding="utf-8"))
    ids = {
        "<unk>": 0,
        "<s>": tiny_cfg["bos_token_id"],
        "</s>": tiny_cfg["eos_token_id"],
        "<|IMAGE_PLACEHOLDER|>": tiny_cfg["image_token_id"],
        "<|video_pad|>": tiny_cfg["video_token_id"],
        "<|IMAGE_START|>": tiny_cfg["vision_start_token_id"],
        "<|IMAGE_END|>": tiny_cfg["vision_end_token_id"],
    }
    big = root / "model_0.9b"
    big.mkdir(exist_ok=True)
    for f in d.iterdir():
        if f.name not in {"config.json", "preprocessor_config.json", "model.safetensors"}:
            (big / f.name).write_bytes(f.read_bytes())
    cfg = model_config(full, ARCH_0_9B["vocab_size"], ids)
    cfg["max_position_embeddings"] = 131072
    (big / "config.json").write_text(json.dumps(cfg, indent=2), encoding="utf-8")
    (big / "preprocessor_config.json").write_text(
        json.dumps(preprocessor_config(full), indent=2), encoding="utf-8"
    )
    return big


def page_image(root: Path) -> tuple[Path, str]:
    """A 2104x1560 synthetic invoice (a blank page when no CJK font is installed)."""
    import random

    from PIL import Image

    path = root / "invoice.jpg"
    try:
        from data_tools.synth import render_invoice, synth_fields

        render_invoice(synth_fields(random.Random(0)), path, size=PAGE)
        return path, "synthetic invoice"
    except Exception as e:  # no font on a bare GPU box: the size is what matters
        log.info("no synthetic invoice (%s): a blank page of the same size", e)
        Image.new("RGB", PAGE, "white").save(path)
        return path, "blank page"


def peak_gb(torch: Any, device: str) -> float | None:
    if device.startswith("cuda"):
        return round(torch.cuda.max_memory_allocated() / 2**30, 3)
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)  # RSS, GB


def reset_peak(torch: Any, device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def sync(torch: Any, device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def build_model(mdir: Path, device: str, dtype: Any) -> Any:
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    cfg = AutoConfig.from_pretrained(str(mdir))
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForImageTextToText.from_config(
            cfg, dtype=dtype, attn_implementation="sdpa"
        )
    return model


def timed_generate(
    model: Any, processor: Any, text: str, page: Any, batch: int, n: int, device: str
) -> tuple[float, int]:
    """Seconds for processor + greedy generate of exactly `n` tokens for `batch` pages."""
    import torch

    t0 = time.perf_counter()
    inputs = processor(text=[text] * batch, images=[page] * batch, return_tensors="pt").to(device)
    with torch.inference_mode():
        gen = model.generate(**inputs, max_new_tokens=n, min_new_tokens=n, do_sample=False)
    sync(torch, device)
    return time.perf_counter() - t0, int(gen.shape[1] - inputs["input_ids"].shape[1])


def bench_extract(
    mdir: Path,
    image: Path,
    batches: list[int],
    new_tokens: int,
    device: str,
    meta: dict,
    out: Path | None,
) -> None:
    import torch
    from PIL import Image
    from transformers import AutoProcessor

    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    model = build_model(mdir, device, dtype).eval()
    processor = AutoProcessor.from_pretrained(str(mdir))
    processor.tokenizer.padding_side = "left"
    with Image.open(image) as im:
        page = im.convert("RGB")
    text = prompt_text(PROMPT, MODEL_NAME)
    for b in batches:
        record = {**meta, "measure": "extract", "batch": b, "new_tokens": new_tokens}
        try:
            timed_generate(model, processor, text, page, b, 2, device)  # warm-up
            reset_peak(torch, device)
            seconds, produced = timed_generate(model, processor, text, page, b, new_tokens, device)
            n_vis = int(
                (
                    processor(text=[text], images=[page], return_tensors="pt")["input_ids"]
                    == model.config.image_token_id
                ).sum()
            )
            record.update(
                visual_tokens_per_image=n_vis,
                generated_per_image=produced,
                latency_s=round(seconds, 3),
                images_per_s=round(b / seconds, 3),
                generated_tokens_per_s=round(b * produced / seconds, 1),
                peak_memory_gb=peak_gb(torch, device),
            )
        except torch.OutOfMemoryError as e:
            record.update(error=f"out of memory: {str(e)[:200]}")
            torch.cuda.empty_cache()
        emit(record, out)
    del model
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def bench_sft(
    mdir: Path,
    image: Path,
    seq_tokens: int,
    steps: int,
    device: str,
    meta: dict,
    out: Path | None,
    workdir: Path,
) -> None:
    import torch
    from transformers import TrainerCallback, TrainingArguments

    from data_tools.sft import SftExample
    from training.preflight import TokenCounter
    from training.torch_sft import build_trainer
    from training.trainers.transformers import TorchSftArguments

    gpu = device.startswith("cuda")
    example = SftExample("bench", str(image), ((PROMPT, ANSWER),), "paddleformers")
    per_sample = TokenCounter(mdir).count([example])[0]
    batch = max(1, seq_tokens // per_sample)
    warmup = 2
    args = TorchSftArguments(
        model_name_or_path=str(mdir), train_dataset_path="", max_seq_len=max(seq_tokens, per_sample)
    )
    targs = TrainingArguments(
        output_dir=str(workdir / "sft"),
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=1,
        max_steps=warmup + steps,
        learning_rate=5e-6,
        bf16=gpu,
        use_cpu=not gpu,
        gradient_checkpointing=True,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        disable_tqdm=True,
        dataloader_num_workers=0,
        remove_unused_columns=False,
        seed=0,
    )
    times: list[float] = []

    class StepTimer(TrainerCallback):
        t0 = 0.0

        def on_step_begin(self, *a: Any, **kw: Any) -> None:
            sync(torch, device)
            self.t0 = time.perf_counter()

        def on_step_end(self, *a: Any, **kw: Any) -> None:
            sync(torch, device)
            times.append(time.perf_counter() - self.t0)

    model = build_model(mdir, device, torch.float32)
    trainer, _ = build_trainer(
        args, targs, model=model, examples=[example] * (batch * (warmup + steps))
    )
    trainer.add_callback(StepTimer())
    reset_peak(torch, device)
    record = {**meta, "measure": "sft_step", "batch": batch, "tokens_per_sample": per_sample}
    try:
        trainer.train()
        timed = times[warmup:]
        s = statistics.median(timed)
        record.update(
            tokens_per_step=batch * per_sample,
            steps_timed=len(timed),
            s_per_step=round(s, 4),
            tokens_per_s=round(batch * per_sample / s, 1),
            peak_memory_gb=peak_gb(torch, device),
            precision="bf16 autocast, float32 weights" if gpu else "float32",
            gradient_checkpointing=True,
        )
    except torch.OutOfMemoryError as e:
        record.update(error=f"out of memory: {str(e)[:200]}")
    emit(record, out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tiny", action="store_true", help="the tiny random model (seconds, CPU)")
    p.add_argument("--device", default="cuda", help="cuda | cuda:N | cpu")
    p.add_argument("--batches", default="1,8,32", help="extraction batch sizes")
    p.add_argument("--new-tokens", type=int, help="fixed output length (default 256; tiny 8)")
    p.add_argument("--sft-tokens", type=int, help="tokens per SFT step (default 16384; tiny 512)")
    p.add_argument(
        "--sft-steps", type=int, help="timed SFT steps after 2 warm-up (default 5; tiny 2)"
    )
    p.add_argument("--skip", choices=["extract", "sft"], action="append", default=[])
    p.add_argument("--out", type=Path, help="also append the JSON lines here")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    import torch
    import transformers

    if a.device.startswith("cuda") and not torch.cuda.is_available():
        print(
            "error: no CUDA device; pass --device cpu (with --tiny on a CPU machine)",
            file=sys.stderr,
        )
        return 2
    new_tokens = a.new_tokens or (8 if a.tiny else 256)
    sft_tokens = a.sft_tokens or (512 if a.tiny else 16384)
    sft_steps = a.sft_steps or (2 if a.tiny else 5)
    meta = {
        "model": "tiny random PaddleOCR-VL (2+2 layers)"
        if a.tiny
        else f"{MODEL_NAME} size, random weights",
        "device": torch.cuda.get_device_name(a.device) if a.device.startswith("cuda") else "cpu",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    with tempfile.TemporaryDirectory(prefix="gpu_throughput.") as td:
        root = Path(td)
        mdir = model_dir(root, a.tiny)
        image, kind = page_image(root)
        meta["image"] = f"{kind} {PAGE[0]}x{PAGE[1]}"
        if "extract" not in a.skip:
            batches = [int(b) for b in a.batches.split(",") if b.strip()]
            bench_extract(mdir, image, batches, new_tokens, a.device, meta, a.out)
        if "sft" not in a.skip:
            bench_sft(mdir, image, sft_tokens, sft_steps, a.device, meta, a.out, root)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
