"""A tiny random-weight PaddleOCR-VL-0.9B model dir, built locally for tests and demos.

The dir has the published architecture (SigLIP NaViT vision encoder, 2x2 merging
projector `mlp_AR`, ERNIE-4.5 decoder with 3D RoPE) shrunk to 2+2 layers, a
SentencePiece tokenizer trained here with the real special tokens, and the same
files as `PaddlePaddle/PaddleOCR-VL` on the hub:

    config.json  generation_config.json  preprocessor_config.json  inference.yml
    chat_template.jinja  tokenizer.model  tokenizer.json  tokenizer_config.json
    special_tokens_map.json  model.safetensors

Weights are stored under the hub checkpoint's key names (`visual.vision_model.*`,
`mlp_AR.*`, `model.*`, `lm_head.weight`) in PyTorch layout (Linear weight is
`[out, in]`): PaddleX (`convert_from_hf=True`) transposes them, transformers 5.x maps
them through `_checkpoint_conversion_mapping` and ignores the SigLIP pooling `head`
and `packing_position_embedding`, which PaddleX's dynamic-graph model requires.

Usage: `build_tiny_model(Path("outputs/tiny_model"))` or
`python -m training.tiny_model --out outputs/tiny_model`. A dir that already holds
a complete model of the same builder version and seed is reused as it is.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import random
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from data_tools.paddleocr_vl import (
    BEGIN_OF_SENTENCE,
    BOS,
    END_OF_SENTENCE,
    EOS,
    IMAGE_END,
    IMAGE_PLACEHOLDER,
    IMAGE_START,
    MASK_TOKEN,
    MERGE_SIZE,
    MODEL_NAME,
    MODEL_TYPE,
    PATCH_SIZE,
    UNK,
    USER_SPECIALS,
    VIDEO_PAD,
    chat_template,
)

if TYPE_CHECKING:  # numpy is imported where the weights are drawn: `--help` stays fast
    import numpy as np

log = logging.getLogger(__name__)

BUILDER_VERSION = 1
STAMP_FILE = ".tiny_model.json"


# The model's facts (special tokens, chat template, name) live in data_tools.paddleocr_vl.
CHAT_TEMPLATE = chat_template(MODEL_NAME)


# Words and characters of Chinese VAT invoices, so the tokenizer has whole pieces for them.
_INVOICE_KEYS = [
    "发票名称",
    "发票代码",
    "发票号码",
    "开票日期",
    "校验码",
    "机器编号",
    "购买方",
    "销售方",
    "名称",
    "纳税人识别号",
    "地址、电话",
    "开户行及账号",
    "密码区",
    "货物或应税劳务、服务",
    "规格型号",
    "单位",
    "数量",
    "单价",
    "金额",
    "税率",
    "税额",
    "合计",
    "价税合计（大写）",
    "价税合计（小写）",
    "收款人",
    "复核",
    "开票人",
    "备注",
]
_CJK_TEXT = (
    "增值税专用发票普通电子广东北京上海深圳广州浙江江苏山东四川湖北湖南河南河北福建天津重庆"
    "市区县镇路街道号楼室大厦科技有限公司股份责任集团贸易服务中心商店网络信息技术咨询工程"
    "中国工商银行建设农业招商交通支行分营业部账户个台件套箱批次年月日时分秒"
    "壹贰叁肆伍陆柒捌玖拾佰仟万亿圆元角整零正负免税不征收"
    "王李张刘陈杨赵黄周吴徐孙马朱胡郭何林罗高梅雪秋燕明华伟芳娜敏静丽强磊军洋勇艳杰涛"
    "手机电脑办公用品材料设备维修运输费餐饮住宿咨询费技术服务费软件硬件纸张墨盒打印机"
    "小米红全通版时尚金色移动联信卡双待黑白灰蓝绿型号规格"
)
_ASCII_TEXT = (
    "OCR: User: Assistant: abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ "
    '0123456789 {}[]":,.-/_*+<>()%¥￥# '
)


@dataclass(frozen=True)
class TinySpec:
    """Sizes of the tiny model (the published 0.9B model in brackets)."""

    text_hidden: int = 64  # [1024]
    text_layers: int = 2  # [18]
    text_heads: int = 2  # [16]
    text_kv_heads: int = 1  # [2]
    text_head_dim: int = 32  # [128]
    text_intermediate: int = 128  # [3072]
    mrope_section: tuple[int, int, int] = (4, 6, 6)  # sums to head_dim / 2 [16, 24, 24]
    vision_hidden: int = 32  # [1152]
    vision_layers: int = 2  # [27]
    vision_heads: int = 2  # [16]
    vision_intermediate: int = 64  # [4304]
    image_size: int = 384
    patch_size: int = PATCH_SIZE
    merge_size: int = MERGE_SIZE
    packing_positions: int = 32768  # PaddleX hard-codes this table size
    vocab_target: int = 1024
    # Small images keep tests fast: at most 64 visual tokens (28x28 pixels each).
    min_pixels: int = 28 * 28 * 4
    max_pixels: int = 28 * 28 * 64


def _corpus(seed: int) -> Iterator[str]:
    """Deterministic text resembling prompts and answers of invoice extraction."""
    rng = random.Random(seed)
    chars = _CJK_TEXT
    yield _ASCII_TEXT
    yield chars
    for _ in range(4000):
        keys = rng.sample(_INVOICE_KEYS, rng.randint(1, 6))
        request = {k: "" for k in keys}
        yield "OCR:" + json.dumps(request, ensure_ascii=False, separators=(",", ":"))
        answer = {}
        for k in keys:
            kind = rng.random()
            if kind < 0.3:
                answer[k] = str(rng.randint(0, 10 ** rng.randint(1, 12)))
            elif kind < 0.5:
                answer[k] = f"¥{rng.randint(0, 99999)}.{rng.randint(0, 99):02d}"
            elif kind < 0.6:
                answer[k] = (
                    f"{rng.randint(2015, 2025)}年{rng.randint(1, 12):02d}月{rng.randint(1, 28):02d}日"
                )
            else:
                answer[k] = "".join(rng.choice(chars) for _ in range(rng.randint(2, 12)))
        yield json.dumps(answer, ensure_ascii=False)
        yield f"User: OCR:{{}}\nAssistant: {json.dumps(answer, ensure_ascii=False)}"


def train_tokenizer_model(seed: int, vocab_target: int) -> bytes:
    """Train a byte-fallback BPE SentencePiece model; returns the serialized model."""
    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=_corpus(seed),
        model_writer=buf,
        model_type="bpe",
        vocab_size=vocab_target,
        hard_vocab_limit=False,
        character_coverage=1.0,
        byte_fallback=True,
        # Like ERNIE's tokenizer: no dummy "▁" prefix, spaces kept as they are.
        add_dummy_prefix=False,
        remove_extra_whitespaces=False,
        normalization_rule_name="identity",
        allow_whitespace_only_pieces=True,
        split_digits=True,
        max_sentencepiece_length=8,
        user_defined_symbols=list(USER_SPECIALS),
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        unk_piece=UNK,
        bos_piece=BOS,
        eos_piece=EOS,
        num_threads=1,
        minloglevel=2,
    )
    return buf.getvalue()


def _tokenizer_config(ids: dict[str, int]) -> dict:
    added = {
        str(ids[tok]): {
            "content": tok,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for tok in (UNK, BOS, EOS, *USER_SPECIALS)
    }
    return {
        "tokenizer_class": "LlamaTokenizer",
        "add_bos_token": False,
        "add_eos_token": False,
        "add_prefix_space": False,
        "legacy": True,
        "bos_token": BOS,
        "eos_token": EOS,
        "unk_token": UNK,
        "pad_token": UNK,
        "cls_token": BEGIN_OF_SENTENCE,
        "sep_token": END_OF_SENTENCE,
        "mask_token": MASK_TOKEN,
        "image_token": IMAGE_PLACEHOLDER,
        "additional_special_tokens": [IMAGE_START, IMAGE_PLACEHOLDER, IMAGE_END, VIDEO_PAD],
        "added_tokens_decoder": added,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 16384,
        "padding_side": "right",
        "processor_class": "PaddleOCRVLProcessor",
        "sp_model_kwargs": {},
    }


def _special_tokens_map() -> dict:
    return {
        "bos_token": BOS,
        "eos_token": EOS,
        "unk_token": UNK,
        "pad_token": UNK,
        "cls_token": BEGIN_OF_SENTENCE,
        "sep_token": END_OF_SENTENCE,
        "mask_token": MASK_TOKEN,
        "additional_special_tokens": [IMAGE_START, IMAGE_PLACEHOLDER, IMAGE_END, VIDEO_PAD],
    }


def _tokenizer_json(model_dir: Path) -> str:
    """tokenizer.json converted from tokenizer.model by transformers (no torch needed)."""
    from transformers import LlamaTokenizer

    tok = LlamaTokenizer.from_pretrained(str(model_dir))
    return tok.backend_tokenizer.to_str(pretty=True)


def model_config(spec: TinySpec, vocab_size: int, ids: dict[str, int]) -> dict:
    """config.json in the hub's layout: flat text config plus `vision_config`."""
    return {
        "architectures": ["PaddleOCRVLForConditionalGeneration"],
        "model_type": MODEL_TYPE,
        "vocab_size": vocab_size,
        "hidden_size": spec.text_hidden,
        "intermediate_size": spec.text_intermediate,
        "num_hidden_layers": spec.text_layers,
        "num_attention_heads": spec.text_heads,
        "num_key_value_heads": spec.text_kv_heads,
        "head_dim": spec.text_head_dim,
        "hidden_act": "silu",
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "max_position_embeddings": 16384,
        "rms_norm_eps": 1e-05,
        "rope_theta": 500000,
        "rope_scaling": {
            "mrope_section": list(spec.mrope_section),
            "rope_type": "default",
            "type": "default",
        },
        "rope_is_neox_style": True,
        "use_3d_rope": True,
        "use_bias": False,
        "use_cache": False,
        "use_flash_attention": False,
        "fuse_rms_norm": False,
        "compression_ratio": 1.0,
        "weight_share_add_bias": True,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "dtype": "float32",
        "pad_token_id": 0,
        "bos_token_id": ids[BOS],
        "eos_token_id": ids[EOS],
        "image_token_id": ids[IMAGE_PLACEHOLDER],
        "video_token_id": ids[VIDEO_PAD],
        "vision_start_token_id": ids[IMAGE_START],
        "vision_end_token_id": ids[IMAGE_END],
        "vision_config": {
            "architectures": ["SiglipVisionModel"],
            "model_type": MODEL_TYPE,
            "hidden_size": spec.vision_hidden,
            "intermediate_size": spec.vision_intermediate,
            "num_hidden_layers": spec.vision_layers,
            "num_attention_heads": spec.vision_heads,
            "num_channels": 3,
            "image_size": spec.image_size,
            "patch_size": spec.patch_size,
            "spatial_merge_size": spec.merge_size,
            "temporal_patch_size": 2,
            "tokens_per_second": 2,
            "hidden_act": "gelu_pytorch_tanh",
            "layer_norm_eps": 1e-06,
            "attention_dropout": 0.0,
            "pad_token_id": 0,
            "torch_dtype": "float32",
        },
    }


def preprocessor_config(spec: TinySpec) -> dict:
    return {
        "image_processor_type": "PaddleOCRVLImageProcessor",
        "processor_class": "PaddleOCRVLProcessor",
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "rescale_factor": 1 / 255,
        "resample": 3,
        "patch_size": spec.patch_size,
        "merge_size": spec.merge_size,
        "temporal_patch_size": 1,
        "min_pixels": spec.min_pixels,
        "max_pixels": spec.max_pixels,
    }


def generation_config(ids: dict[str, int]) -> dict:
    return {
        "bos_token_id": ids[BOS],
        "eos_token_id": ids[EOS],
        "pad_token_id": 0,
        "use_cache": True,
    }


def inference_yml(model_name: str = MODEL_NAME) -> str:
    """What PaddleX reads to check the model dir belongs to `model_name`."""
    return f"Global:\n  model_name: {model_name}\n"


def weight_shapes(spec: TinySpec, vocab_size: int) -> dict[str, tuple[int, ...]]:
    """Every tensor of the checkpoint, hub key names, PyTorch layout."""
    hv, iv, ht, it = (
        spec.vision_hidden,
        spec.vision_intermediate,
        spec.text_hidden,
        spec.text_intermediate,
    )
    shapes: dict[str, tuple[int, ...]] = {}
    v = "visual.vision_model."
    shapes[v + "embeddings.patch_embedding.weight"] = (hv, 3, spec.patch_size, spec.patch_size)
    shapes[v + "embeddings.patch_embedding.bias"] = (hv,)
    n_pos = (spec.image_size // spec.patch_size) ** 2
    shapes[v + "embeddings.position_embedding.weight"] = (n_pos, hv)
    shapes[v + "embeddings.packing_position_embedding.weight"] = (spec.packing_positions, hv)
    for i in range(spec.vision_layers):
        p = f"{v}encoder.layers.{i}."
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            shapes[f"{p}self_attn.{proj}.weight"] = (hv, hv)
            shapes[f"{p}self_attn.{proj}.bias"] = (hv,)
        for norm in ("layer_norm1", "layer_norm2"):
            shapes[f"{p}{norm}.weight"] = (hv,)
            shapes[f"{p}{norm}.bias"] = (hv,)
        shapes[f"{p}mlp.fc1.weight"] = (iv, hv)
        shapes[f"{p}mlp.fc1.bias"] = (iv,)
        shapes[f"{p}mlp.fc2.weight"] = (hv, iv)
        shapes[f"{p}mlp.fc2.bias"] = (hv,)
    shapes[v + "post_layernorm.weight"] = (hv,)
    shapes[v + "post_layernorm.bias"] = (hv,)
    # SigLIP attention-pooling head: unused by PaddleOCR-VL, but PaddleX builds it.
    h = v + "head."
    shapes[h + "probe"] = (1, 1, hv)
    shapes[h + "attention.in_proj_weight"] = (3 * hv, hv)
    shapes[h + "attention.in_proj_bias"] = (3 * hv,)
    shapes[h + "attention.out_proj.weight"] = (hv, hv)
    shapes[h + "attention.out_proj.bias"] = (hv,)
    shapes[h + "layernorm.weight"] = (hv,)
    shapes[h + "layernorm.bias"] = (hv,)
    shapes[h + "mlp.fc1.weight"] = (iv, hv)
    shapes[h + "mlp.fc1.bias"] = (iv,)
    shapes[h + "mlp.fc2.weight"] = (hv, iv)
    shapes[h + "mlp.fc2.bias"] = (hv,)
    merged = hv * spec.merge_size**2
    shapes["mlp_AR.pre_norm.weight"] = (hv,)
    shapes["mlp_AR.pre_norm.bias"] = (hv,)
    shapes["mlp_AR.linear_1.weight"] = (merged, merged)
    shapes["mlp_AR.linear_1.bias"] = (merged,)
    shapes["mlp_AR.linear_2.weight"] = (ht, merged)
    shapes["mlp_AR.linear_2.bias"] = (ht,)
    shapes["model.embed_tokens.weight"] = (vocab_size, ht)
    q_dim = spec.text_heads * spec.text_head_dim
    kv_dim = spec.text_kv_heads * spec.text_head_dim
    for i in range(spec.text_layers):
        p = f"model.layers.{i}."
        shapes[p + "self_attn.q_proj.weight"] = (q_dim, ht)
        shapes[p + "self_attn.k_proj.weight"] = (kv_dim, ht)
        shapes[p + "self_attn.v_proj.weight"] = (kv_dim, ht)
        shapes[p + "self_attn.o_proj.weight"] = (ht, q_dim)
        shapes[p + "mlp.gate_proj.weight"] = (it, ht)
        shapes[p + "mlp.up_proj.weight"] = (it, ht)
        shapes[p + "mlp.down_proj.weight"] = (ht, it)
        shapes[p + "input_layernorm.weight"] = (ht,)
        shapes[p + "post_attention_layernorm.weight"] = (ht,)
    shapes["model.norm.weight"] = (ht,)
    shapes["lm_head.weight"] = (vocab_size, ht)
    return shapes


def random_weights(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, np.ndarray]:
    """Norm scales 1, biases 0, everything else N(0, 0.02), float32."""
    import numpy as np

    rng = np.random.default_rng(seed)
    tensors: dict[str, np.ndarray] = {}
    for key, shape in shapes.items():
        is_norm = any(n in key for n in ("norm", "layer_norm", "layernorm"))
        if is_norm and key.endswith("weight"):
            arr = np.ones(shape, np.float32)
        elif key.endswith("bias"):
            arr = np.zeros(shape, np.float32)
        else:
            arr = rng.normal(0.0, 0.02, size=shape).astype(np.float32)
        tensors[key] = arr
    return tensors


def _write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def _stamp(seed: int, spec: TinySpec) -> dict:
    return {"builder_version": BUILDER_VERSION, "seed": seed, "spec": asdict(spec)}


def is_tiny_model(model_dir: Path, *, seed: int | None = None) -> bool:
    """True when `model_dir` holds a complete tiny model of this builder version (and seed)."""
    stamp = model_dir / STAMP_FILE
    if not stamp.is_file() or not (model_dir / "model.safetensors").is_file():
        return False
    try:
        info = json.loads(stamp.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    if info.get("builder_version") != BUILDER_VERSION:
        return False
    if info.get("spec") != json.loads(json.dumps(asdict(TinySpec()))):
        return False
    return seed is None or info.get("seed") == seed


def _write_model(out: Path, seed: int, spec: TinySpec) -> None:
    import sentencepiece as spm
    from safetensors.numpy import save_file

    sp_bytes = train_tokenizer_model(seed, spec.vocab_target)
    (out / "tokenizer.model").write_bytes(sp_bytes)
    sp = spm.SentencePieceProcessor(model_proto=sp_bytes)
    vocab_size = sp.get_piece_size()
    ids = {tok: sp.piece_to_id(tok) for tok in (UNK, BOS, EOS, *USER_SPECIALS)}
    _write_json(out / "tokenizer_config.json", _tokenizer_config(ids))
    _write_json(out / "special_tokens_map.json", _special_tokens_map())
    (out / "tokenizer.json").write_text(_tokenizer_json(out), encoding="utf-8")
    (out / "chat_template.jinja").write_text(CHAT_TEMPLATE, encoding="utf-8")
    _write_json(out / "config.json", model_config(spec, vocab_size, ids))
    _write_json(out / "generation_config.json", generation_config(ids))
    _write_json(out / "preprocessor_config.json", preprocessor_config(spec))
    (out / "inference.yml").write_text(inference_yml(), encoding="utf-8")
    tensors = random_weights(weight_shapes(spec, vocab_size), seed)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    _write_json(out / STAMP_FILE, _stamp(seed, spec))


def build_tiny_model(out_dir: Path, *, seed: int = 0) -> Path:
    """Write the tiny model to `out_dir` (kept when already built with this seed); returns it.

    Built in a temporary sibling dir and renamed into place, so a crash never leaves
    a half-written model behind. An existing `out_dir` that is not a tiny model is
    refused rather than overwritten.
    """
    out_dir = Path(out_dir).absolute()
    if is_tiny_model(out_dir, seed=seed):
        log.debug("tiny model already built at %s", out_dir)
        return out_dir
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / STAMP_FILE).exists():
        raise FileExistsError(
            f"{out_dir} exists and is not a tiny model dir; pass an empty or new --out path"
        )
    spec = TinySpec()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        _write_model(tmp, seed, spec)
        tmp.chmod(0o755)  # mkdtemp makes it private
        for f in tmp.iterdir():
            f.chmod(0o644)
        if out_dir.exists():
            shutil.rmtree(out_dir)  # a stale tiny model (other seed or builder version)
        try:
            os.replace(tmp, out_dir)
        except OSError:
            # Another process finished the same build first: keep theirs.
            if not is_tiny_model(out_dir, seed=seed):
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("built tiny PaddleOCR-VL model at %s", out_dir)
    return out_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.tiny_model",
        description="Write a tiny random-weight PaddleOCR-VL-0.9B model dir (tests, demos).",
    )
    parser.add_argument("--out", type=Path, required=True, help="model dir to write")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    path = build_tiny_model(args.out, seed=args.seed)
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
