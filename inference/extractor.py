"""The production extractor: image + request in, parsed JSON + raw text + parse report out.

    from inference.extractor import Extractor
    from inference.backends import BackendConfig

    ex = Extractor.from_config(BackendConfig(backend="paddlex", model_dir="outputs/model"))
    r = ex.extract("invoice.jpg", ["发票号码", "开票日期"])       # a list of keys
    r = ex.extract("invoice.jpg", {"购买方": {"名称": ""}})        # a request (prompt grammar)
    r = ex.extract("invoice.jpg", 'OCR:{"发票号码":""}')          # a raw prompt
    r = ex.extract("invoice.jpg")                                  # everything: OCR:{}
    r.fields, r.raw_output, r.parse.method, r.latency_s

One call for every backend (`inference.backends`): the extractor builds the prompt with
the grammar of `data_tools.prompts`, prepares the image (`inference.imaging`: min/max
pixels, optional character-density downscale), asks the backend for text and parses it
with `data_tools.parsing` (strict JSON, embedded, repaired, failed; truncation and
duplicate keys reported). `aextract` is the async form used by the HTTP service and the
batch runner.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from data_tools.parsing import (
    JsonLimitError,
    ParseLimits,
    ParseReport,
    loads_bounded,
    parse_model_output,
)
from data_tools.prompts import (
    FULL_PROMPT,
    PromptError,
    build_prompt,
    parse_prompt,
    request_for_keys,
)
from data_tools.schema import Schema, load_schema
from inference.backends import Backend, BackendConfig, Generation, make_backend
from inference.imaging import ImageOptions, PreparedImage, prepare_image

log = logging.getLogger(__name__)

ImageInput = str | Path | bytes | Image.Image | np.ndarray
Query = Mapping[str, Any] | Sequence[str] | str | None


#: a typed query (CLI flag, form field) is a request: small and shallow
QUERY_JSON_LIMITS = ParseLimits(max_chars=100_000, max_depth=16, max_number_chars=32)


class QueryError(ValueError):
    """A request, key list or prompt that cannot be turned into a prompt."""


def resolve_query(query: Query, schema: Schema | None = None) -> tuple[str, dict[str, Any] | None]:
    """(prompt, request) for a request dict, a list of keys, a raw prompt or None (all).

    A list of keys gets type-aware placeholders from `schema` (a dict field asks for
    ``{}``, a list field for ``[]``). A raw prompt is sent verbatim; its request is None
    when it is not a key-extraction prompt (e.g. plain ``OCR:``).
    """
    if query is None:
        return FULL_PROMPT, {}
    if isinstance(query, str):
        if not query.strip():
            raise QueryError("empty prompt")
        try:
            return query, parse_prompt(query)
        except PromptError:
            return query, None
    if isinstance(query, Mapping):
        request = dict(query)
        try:
            return build_prompt(request), request
        except PromptError as e:
            raise QueryError(f"request does not follow the prompt grammar: {e}") from None
    if isinstance(query, Sequence) and all(isinstance(k, str) for k in query):
        keys = [k.strip() for k in query if k.strip()]
        if not keys:
            raise QueryError("empty list of keys")
        if len(set(keys)) != len(keys):
            raise QueryError(f"duplicate keys in {keys}")
        request = request_for_keys(schema.skeleton() if schema else {}, keys)
        return build_prompt(request), request
    raise QueryError(
        f"a query is a request object, a list of key names or a prompt string, got "
        f"{type(query).__name__}"
    )


def query_from_text(text: str) -> Query:
    """A query typed by a person (CLI flag, form field) to a `Query`.

    ``{...}`` is a JSON request; ``[...]`` a JSON list of keys; text with a colon a raw
    prompt (``OCR:{...}``); anything else a comma-separated list of keys
    (``发票号码,开票日期``; full-width commas too).
    """
    s = text.strip()
    if not s:
        raise QueryError("empty query")
    if s[0] in "{[":
        try:
            value = loads_bounded(s, QUERY_JSON_LIMITS)
        except json.JSONDecodeError as e:
            raise QueryError(f"query is not valid JSON: {e.msg} at char {e.pos}") from None
        except JsonLimitError as e:
            raise QueryError(f"query: {e}") from None
        return value
    if ":" in s:  # a prompt: OCR:{...}, OCR:, Table Recognition:
        return s
    return [k.strip() for k in s.replace("，", ",").split(",") if k.strip()]


@dataclass
class Extraction:
    """The answer to one extraction call."""

    prompt: str
    request: dict[str, Any] | None
    fields: Any  # the parsed JSON; None when parsing failed
    raw_output: str
    parse: ParseReport
    latency_s: float
    usage: dict[str, Any] = field(default_factory=dict)
    finish_reason: str | None = None
    backend: str = ""
    model: str = ""
    image_size: tuple[int, int] = (0, 0)  # (width, height) as received
    model_image_size: tuple[int, int] = (0, 0)  # (width, height) the model saw
    timings: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)  # what the backend adds (Generation.info)
    confidence: dict[str, Any] | None = None  # per-leaf, from token log-probabilities

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt,
            "fields": self.fields,
            "raw_output": self.raw_output,
            "parse": self.parse.to_dict(),
            "latency_s": round(self.latency_s, 4),
            "usage": self.usage,
            "finish_reason": self.finish_reason,
            "backend": self.backend,
            "model": self.model,
            "image_size": list(self.image_size),
            "model_image_size": list(self.model_image_size),
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
            **({"info": self.info} if self.info else {}),
            **({"confidence": self.confidence} if self.confidence is not None else {}),
        }


def _confidence(gen: Generation, fields: Any) -> dict[str, Any] | None:
    """Per-leaf confidence of the parsed fields from the generation's token log-probabilities."""
    if not gen.token_logprobs or fields is None:
        return None
    from data_tools.confidence import leaf_confidence

    return leaf_confidence(gen.text, gen.token_logprobs, fields).to_dict()


class Extractor:
    """One extraction call over any backend; see the module docstring."""

    def __init__(
        self,
        backend: Backend,
        *,
        image_options: ImageOptions | None = None,
        schema: Schema | str | None = None,
    ) -> None:
        self.backend = backend
        self.image_options = image_options or ImageOptions()
        self.schema = load_schema(schema) if isinstance(schema, str) else schema

    @classmethod
    def from_config(
        cls,
        backend: BackendConfig,
        *,
        image_options: ImageOptions | None = None,
        schema: Schema | str | None = "vat_invoice",
    ) -> Extractor:
        return cls(make_backend(backend), image_options=image_options, schema=schema)

    # ------------------------------------------------------------ pieces

    def prompt_for(self, query: Query) -> tuple[str, dict[str, Any] | None]:
        return resolve_query(query, self.schema)

    def prepare(self, image: ImageInput | PreparedImage) -> PreparedImage:
        """Decode and size the image once (raises `inference.imaging.ImageError`).

        Pass the result to `extract` / `aextract` for every prompt on that image: it is
        not prepared again (`extract_many` does exactly that).

        A backend that caches by source file (``wants_source_sha256``: the OCR + LLM
        pipeline, whose OCR cache the OCR-ceiling command reads) finds the file's sha256 in
        ``prepared.image.info["source_sha256"]``.
        """
        prepared = prepare_image(image, self.image_options, fit=self.backend.uses_image)
        if getattr(self.backend, "wants_source_sha256", False) and isinstance(image, str | Path):
            from inference.ocr_cache import image_sha256

            prepared.image.info["source_sha256"] = image_sha256(image)
        return prepared

    async def aprepare(self, image: ImageInput | PreparedImage) -> PreparedImage:
        """`prepare` in a worker thread (decoding is CPU work)."""
        if isinstance(image, PreparedImage):
            return image
        return await asyncio.to_thread(self.prepare, image)

    def _finish(
        self,
        prompt: str,
        request: dict[str, Any] | None,
        gen: Generation,
        prepared: PreparedImage,
        t0: float,
        timings: dict[str, float],
    ) -> Extraction:
        t_parse = time.perf_counter()
        parsed = parse_model_output(
            gen.text,
            finish_reason=gen.finish_reason,
            max_new_tokens=self.backend.options.max_new_tokens,
            n_tokens=gen.n_tokens,
        )
        timings["parse_s"] = time.perf_counter() - t_parse
        return Extraction(
            prompt=prompt,
            request=request,
            fields=parsed.value,
            raw_output=gen.text,
            parse=parsed.report,
            latency_s=time.perf_counter() - t0,
            usage=dict(gen.usage),
            finish_reason=gen.finish_reason,
            backend=self.backend.name,
            model=gen.model or self.backend.model_name,
            image_size=prepared.original_size,
            model_image_size=prepared.size,
            timings=timings,
            info=dict(gen.info),
            confidence=_confidence(gen, parsed.value),
        )

    # ------------------------------------------------------------ calls

    def extract(self, image: ImageInput | PreparedImage, query: Query = None) -> Extraction:
        """Extract `query` from `image` (blocking)."""
        t0 = time.perf_counter()
        prompt, request = self.prompt_for(query)
        prepared = self.prepare(image)
        timings = {"prepare_s": time.perf_counter() - t0}
        t_gen = time.perf_counter()
        gen = self.backend.generate(prepared.image, prompt)
        timings["generate_s"] = time.perf_counter() - t_gen
        return self._finish(prompt, request, gen, prepared, t0, timings)

    async def aextract(self, image: ImageInput | PreparedImage, query: Query = None) -> Extraction:
        """Extract `query` from `image`; image work and local models run in threads."""
        t0 = time.perf_counter()
        prompt, request = self.prompt_for(query)
        prepared = await self.aprepare(image)
        timings = {"prepare_s": time.perf_counter() - t0}
        t_gen = time.perf_counter()
        gen = await self.backend.agenerate(prepared.image, prompt)
        timings["generate_s"] = time.perf_counter() - t_gen
        # parsing is bounded but can take a few hundred ms (repair): off the event loop
        return await asyncio.to_thread(self._finish, prompt, request, gen, prepared, t0, timings)

    def extract_many(
        self, image: ImageInput | PreparedImage, queries: Sequence[Query]
    ) -> list[Extraction]:
        """Every query on one image, which is prepared once (blocking)."""
        prepared = self.prepare(image)
        return [self.extract(prepared, q) for q in queries]

    async def aextract_many(
        self, image: ImageInput | PreparedImage, queries: Sequence[Query]
    ) -> list[Extraction | Exception]:
        """Every query on one image, prepared once; a query's failure is its own entry.

        An image that does not prepare raises (`ImageError`): no query can run on it.
        """
        prepared = await self.aprepare(image)
        out: list[Extraction | Exception] = []
        for q in queries:  # in order: a local model runs one call at a time anyway
            try:
                out.append(await self.aextract(prepared, q))
            except Exception as e:  # reported per query to the caller
                out.append(e)
        return out

    def info(self) -> dict[str, Any]:
        return {
            **self.backend.info(),
            "schema": self.schema.name if self.schema else None,
            "image": {
                "min_pixels": self.image_options.min_pixels,
                "max_pixels": self.image_options.max_pixels,
                "char_density": self.image_options.char_density,
            },
            "max_new_tokens": self.backend.options.max_new_tokens,
        }

    def close(self) -> None:
        self.backend.close()

    async def aclose(self) -> None:
        await self.backend.aclose()

    def __enter__(self) -> Extractor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
