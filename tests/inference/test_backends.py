"""Every backend answers the same request with a parse report.

paddlex runs the tiny random-weight model in-process; openai talks to the local stub
server; paddlex-pipeline runs on a patched paddlex copy in a subprocess (slow);
transformers runs in `.venv-torch` when it exists (`make setup-torch`), else is skipped.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from data_tools.llm_client import EndpointConfig
from data_tools.paddleocr_vl import MODEL_NAME
from data_tools.prompts import project
from inference.backends import BackendConfig, BackendError, BackendUnavailable
from inference.extractor import Extractor
from inference.imaging import ImageOptions
from tests.support.openai_stub import FaultPlan, OpenAIStub, TruthResponder, request_text

REPO = Path(__file__).resolve().parents[2]
TORCH_PY = REPO / ".venv-torch" / "bin" / "python"
QUERY = ["发票号码", "购买方"]
PROMPT = 'OCR:{"发票号码":"","购买方":{}}'
TRUTH = {
    "发票号码": "04518212",
    "开票日期": "2024年01月02日",
    "购买方": {"名称": "某某科技有限公司"},
}
TINY_IMAGES = ImageOptions(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 64)

RUN_ONE = """
import json, sys
from inference.backends import BackendConfig
from inference.extractor import Extractor
from inference.imaging import ImageOptions
backend, model_dir, image = sys.argv[1:4]
ex = Extractor.from_config(
    BackendConfig(backend=backend, model_dir=model_dir, max_new_tokens=12),
    image_options=ImageOptions(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 64),
)
r = ex.extract(image, ["发票号码", "购买方"])
print("RESULT " + json.dumps(r.to_dict(), ensure_ascii=False))
"""


def _assert_report(d: dict) -> None:
    assert d["prompt"] == PROMPT
    assert set(d["parse"]) == {
        "method",
        "truncated",
        "duplicate_keys",
        "conflicting_duplicate_keys",
        "error",
    }
    assert d["parse"]["method"] in ("strict", "embedded", "repaired", "failed")
    assert d["latency_s"] > 0


def _run_in(
    python: Path | str, backend: str, model_dir: Path, image: Path, pythonpath: list[Path]
) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(p) for p in [*pythonpath, REPO])}
    env["PADDLE_PDX_DISABLE_MODEL_SOURCE_CHECK"] = "True"
    r = subprocess.run(
        [str(python), "-c", RUN_ONE, backend, str(model_dir), str(image)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    line = next(x for x in r.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def test_paddlex_backend_on_the_tiny_model(tiny_model_dir: Path, test_images: list[Path]) -> None:
    cfg = BackendConfig(backend="paddlex", model_dir=str(tiny_model_dir), max_new_tokens=12)
    with Extractor.from_config(cfg, image_options=TINY_IMAGES) as ex:
        r = ex.extract(test_images[0], QUERY)
    d = r.to_dict()
    _assert_report(d)
    assert r.raw_output  # random weights: some text, usually not JSON
    assert r.usage["completion_tokens"] <= 12 + 2
    assert r.finish_reason in ("stop", "length")
    assert r.parse.truncated == (r.finish_reason == "length")
    assert r.backend == "paddlex"


def test_paddlex_backend_refuses_a_dir_without_a_model(tmp_path: Path) -> None:
    with pytest.raises(BackendUnavailable, match="not a PaddleOCR-VL model dir"):
        Extractor.from_config(BackendConfig(backend="paddlex", model_dir=str(tmp_path)))


def test_openai_backend_against_the_local_stub(test_images: list[Path]) -> None:
    truth = TruthResponder()
    truth.add_image(test_images[0], TRUTH)
    with OpenAIStub(truth) as stub:
        cfg = BackendConfig(backend="openai", endpoint=EndpointConfig([stub.base_url], "pp-vl"))
        ex = Extractor.from_config(cfg, image_options=TINY_IMAGES)
        r = ex.extract(test_images[0], QUERY)
        (req,) = stub.requests
    _assert_report(r.to_dict())
    assert r.parse.method == "strict"
    assert r.fields == project(TRUTH, {"发票号码": "", "购买方": {}})
    assert request_text(req.body) == PROMPT  # the prompt, exactly
    content = req.body["messages"][0]["content"]
    assert content[0]["type"] == "image_url"  # image first, then the text
    assert content[0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert req.body["model"] == "pp-vl" and req.body["max_tokens"] == 2048


def test_openai_backend_concurrency_retries_and_auth(test_images: list[Path]) -> None:
    truth = TruthResponder()
    truth.add_image(test_images[0], TRUTH)
    with OpenAIStub(truth, latency_s=0.3) as stub:
        endpoint = EndpointConfig([stub.base_url], MODEL_NAME, max_concurrency=4, max_attempts=3)
        cfg = BackendConfig(backend="openai", endpoint=endpoint)
        ex = Extractor.from_config(cfg, image_options=TINY_IMAGES)

        async def many() -> list:
            try:
                return await asyncio.gather(
                    *(ex.aextract(test_images[0], QUERY) for _ in range(12))
                )
            finally:
                await ex.aclose()

        t0 = time.perf_counter()
        results = asyncio.run(many())
        wall = time.perf_counter() - t0
        assert all(r.parse.method == "strict" for r in results)
        assert stub.stats()["max_in_flight"] == 4  # the cap, reached and not exceeded
        assert wall < 12 * 0.3 * 0.6  # concurrent, not one by one

    with OpenAIStub(truth, faults=FaultPlan(script=["429", "500"], retry_after_s=0.01)) as stub:
        cfg = BackendConfig(
            backend="openai", endpoint=EndpointConfig([stub.base_url], MODEL_NAME, max_attempts=3)
        )
        r = Extractor.from_config(cfg, image_options=TINY_IMAGES).extract(test_images[0], QUERY)
        assert r.usage["attempts"] == 3 and r.parse.method == "strict"

    with OpenAIStub(truth, faults=FaultPlan(script=["500"] * 5)) as stub:
        cfg = BackendConfig(
            backend="openai", endpoint=EndpointConfig([stub.base_url], MODEL_NAME, max_attempts=2)
        )
        ex = Extractor.from_config(cfg, image_options=TINY_IMAGES)
        ex.backend.config.backoff_base_s = 0.01
        with pytest.raises(BackendError):
            ex.extract(test_images[0], QUERY)

    with OpenAIStub(truth, faults=FaultPlan(api_key="right")) as stub:
        cfg = BackendConfig(
            backend="openai", endpoint=EndpointConfig([stub.base_url], MODEL_NAME, api_key_env=None)
        )
        with pytest.raises(BackendUnavailable, match="401"):
            Extractor.from_config(cfg, image_options=TINY_IMAGES).extract(test_images[0], QUERY)


def test_fake_backend_answers_placeholders(test_images: list[Path]) -> None:
    ex = Extractor.from_config(BackendConfig(backend="fake"), image_options=TINY_IMAGES)
    r = ex.extract(test_images[0], QUERY)
    _assert_report(r.to_dict())
    assert r.fields == {"发票号码": "", "购买方": {}}


@pytest.mark.slow
def test_paddlex_pipeline_backend_with_the_patch(
    patched_paddlex: Path, tiny_model_dir: Path, test_images: list[Path]
) -> None:
    d = _run_in(
        sys.executable, "paddlex-pipeline", tiny_model_dir, test_images[0], [patched_paddlex]
    )
    _assert_report(d)
    assert d["backend"] == "paddlex-pipeline"
    assert d["raw_output"]


@pytest.mark.slow
def test_paddlex_pipeline_backend_refuses_unpatched_paddlex(
    tiny_model_dir: Path, test_images: list[Path]
) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    code = (
        "from inference.backends import BackendConfig, BackendUnavailable, make_backend\n"
        "try:\n"
        f"    make_backend(BackendConfig(backend='paddlex-pipeline', model_dir={str(tiny_model_dir)!r}))\n"
        "except BackendUnavailable as e:\n"
        "    print('REFUSED', e)\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert "REFUSED" in r.stdout and "make patch" in r.stdout, r.stderr[-2000:]


@pytest.mark.skipif(not TORCH_PY.exists(), reason="no .venv-torch (make setup-torch)")
def test_transformers_backend_in_the_torch_env(
    tiny_model_dir: Path, test_images: list[Path]
) -> None:
    d = _run_in(TORCH_PY, "transformers", tiny_model_dir, test_images[0], [])
    _assert_report(d)
    assert d["backend"] == "transformers"
    assert d["usage"]["completion_tokens"] <= 12
    assert d["finish_reason"] in ("stop", "length")


LOGPROBS = """
import json, sys
from inference.backends import BackendConfig, make_backend
from inference.imaging import ImageOptions, prepare_image
model_dir, image = sys.argv[1:3]
backend = make_backend(
    BackendConfig(backend="transformers", model_dir=model_dir, max_new_tokens=12, confidence=True)
)
img = prepare_image(image, ImageOptions(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 64)).image
gen = backend.generate(img, 'OCR:{"发票号码":""}')
tokens = [[t.text, t.logprob] for t in gen.token_logprobs]
print("RESULT " + json.dumps({"text": gen.text, "tokens": tokens}, ensure_ascii=False))
"""


@pytest.mark.skipif(not TORCH_PY.exists(), reason="no .venv-torch (make setup-torch)")
def test_transformers_backend_gives_token_logprobs(
    tiny_model_dir: Path, test_images: list[Path]
) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run(
        [str(TORCH_PY), "-c", LOGPROBS, str(tiny_model_dir), str(test_images[0])],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    d = json.loads(r.stdout.split("RESULT ", 1)[1])
    assert d["tokens"] and "".join(t for t, _ in d["tokens"]) == d["text"]  # they spell it
    assert all(lp <= 1e-6 for _, lp in d["tokens"])  # log-probabilities


def test_auto_backend_is_paddlex_on_cpu_in_the_paddle_env(tiny_model_dir: Path) -> None:
    """No torch here: `auto` runs PaddleX, with the CPU attention patch in place."""
    from inference.backends import make_backend, paddlex_attention

    backend = make_backend(BackendConfig(model_dir=str(tiny_model_dir), max_new_tokens=4))
    try:
        assert backend.name == "paddlex"
        assert paddlex_attention.is_applied()
    finally:
        backend.close()
        paddlex_attention.revert()


@pytest.mark.skipif(not TORCH_PY.exists(), reason="no .venv-torch (make setup-torch)")
def test_auto_backend_is_transformers_on_cpu_in_the_torch_env(
    tiny_model_dir: Path, test_images: list[Path]
) -> None:
    d = _run_in(TORCH_PY, "auto", tiny_model_dir, test_images[0], [])
    _assert_report(d)
    assert d["backend"] == "transformers"
