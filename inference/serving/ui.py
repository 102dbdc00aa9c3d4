"""The browser UI of the service: Extract, Batch and Review pages (``/ui/``).

Mounted by `inference.serving.app` with one line::

    app.include_router(ui_router(s, run_extraction, resolve_prompt))

so the UI runs in the same process, behind the same bearer token (the service's `Guard`
checks it; the page asks for the key and sends it with every API call), the same body limit,
admission tickets, deadline, decode-pixel budget and model slots as ``/v1/extract``: every
page of a document goes through the service's own `run_extraction` within the request's
deadline. Everything is served from ``inference/serving/static/`` (no CDN). The page and its
two static files (``UI_PUBLIC_PATHS``) hold no data and are public, so a browser can load
them without a header; every ``/ui/api/*`` call needs the key when one is set.

=============================  ===============================================================
``GET  /ui/``                  the page (tabs: Extract, Batch, Review)
``GET  /ui/static/{file}``     its script and style sheet
``GET  /ui/api/info``          schema keys for the field picker, auth, whether review is on
``POST /ui/api/extract``       multipart: ``file`` (image / PDF / OFD), ``fields``
                               (comma list, empty = everything), ``pages`` ("1-2"),
                               ``batch`` (an id: duplicates are tracked per batch) →
                               per page: preview, fields, validation, confidence; the merged
                               document; the duplicate it repeats
``POST /ui/api/excel``         JSON ``{"rows": [prediction rows]}`` → the batch .xlsx
                               (`inference.predict.write_excel`)
``GET  /ui/api/review/sources``  review sources under the review root
``GET  /ui/api/review/items``  ``?source=REL&threshold=0.9`` → items to review
``GET  /ui/api/review/image``  ``?source=REL&id=ID`` → the item's page image (PNG/JPEG)
``POST /ui/api/review/save``   JSON ``{"source", "id", "fields", "action"}`` → appended to
                               ``reviewed.jsonl`` beside the source
=============================  ===============================================================

Review reads and writes only below the review root: ``review_root`` given to the router or
``$KIE_REVIEW_ROOT`` (unset: the Review page says so and its calls answer 403).
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import os
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from PIL import Image, ImageOps
from starlette.datastructures import UploadFile

from data_tools.confidence import leaf_confidence
from data_tools.documents import (
    DocumentError,
    DocumentOptions,
    Page,
    count_pages,
    load_pages,
    merge_pages,
    select_pages,
    sniff_kind,
)
from data_tools.duplicates import DuplicateTracker, content_hash
from data_tools.parsing import JsonLimitError, ParseLimits, loads_bounded
from data_tools.review import (
    NEEDS_REVIEW,
    ReviewError,
    append_reviewed,
    load_review_items,
    reviewed_path,
    reviewed_record,
)
from data_tools.validation import validate_prediction
from inference.serving.admission import BudgetTimeout
from inference.serving.inputs import InputRejected, check_text

log = logging.getLogger("inference.serve.ui")

STATIC = Path(__file__).resolve().parent / "static"
UI_PUBLIC_PATHS = ("/ui", "/ui/", "/ui/static/app.js", "/ui/static/app.css")
STATIC_FILES = {"app.js": "text/javascript", "app.css": "text/css", "index.html": "text/html"}
UI_MAX_PAGES = 10
PREVIEW_MAX_SIDE = 1400
MAX_BATCHES = 64
MAX_SOURCES = 200


def _api_error(status: int, message: str, code: str) -> Exception:
    from inference.serving.app import ApiError

    return ApiError(status, message, code)


def _preview(image: Image.Image) -> str:
    """A JPEG data URL of the page, at most PREVIEW_MAX_SIDE pixels a side."""
    im = image.copy()
    im.thumbnail((PREVIEW_MAX_SIDE, PREVIEW_MAX_SIDE))
    buf = io.BytesIO()
    im.convert("RGB").save(buf, "JPEG", quality=82)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def _confidence(result: Any) -> dict[str, Any] | None:
    """The extraction's per-leaf confidence, when its backend gave token log-probabilities."""
    given = getattr(result, "confidence", None)
    if isinstance(given, dict):
        return given
    tokens = getattr(result, "token_logprobs", None)
    if tokens:
        return leaf_confidence(result.raw_output, tokens, result.fields).to_dict()
    return None


def ui_router(
    service: Any,
    run_extraction: Callable[[Request, bytes, str], Awaitable[Any]],
    resolve_prompt: Callable[[Any], str],
    *,
    review_root: str | Path | None = None,
) -> APIRouter:
    """The UI's routes around the service's own extraction call (`inference.serving.app`)."""
    router = APIRouter(include_in_schema=False)
    extractor = service.extractor
    schema = extractor.schema
    limits = service.config.limits
    json_limits = ParseLimits(
        max_chars=limits.max_body_bytes, max_depth=limits.max_json_depth, max_number_chars=32
    )
    root_setting = review_root or os.environ.get("KIE_REVIEW_ROOT") or None
    root = Path(root_setting).expanduser().resolve() if root_setting else None
    # per batch id: the tracker and the names of the uploads it has seen
    batches: OrderedDict[str, tuple[DuplicateTracker, dict[str, str]]] = OrderedDict()
    save_lock = threading.Lock()
    image_options = getattr(extractor, "image_options", None)
    doc_options = DocumentOptions(
        max_pixels=getattr(image_options, "max_pixels", DocumentOptions.max_pixels),
        max_image_pixels=getattr(image_options, "max_image_pixels", 64_000_000),
        max_pages=UI_MAX_PAGES,
    )

    def tracker(batch: str | None) -> tuple[DuplicateTracker, dict[str, str]] | None:
        if not batch:
            return None
        t = batches.get(batch)
        if t is None:
            t = batches[batch] = (DuplicateTracker(max_entries=10_000), {})
            while len(batches) > MAX_BATCHES:
                batches.popitem(last=False)
        batches.move_to_end(batch)
        return t

    # ------------------------------------------------------------ page and files

    @router.get("/ui")
    async def ui_redirect() -> Response:
        return RedirectResponse("/ui/")

    @router.get("/ui/")
    async def ui_page() -> Response:
        return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"))

    @router.get("/ui/static/{name}")
    async def ui_static(name: str) -> Response:
        if name not in STATIC_FILES or name == "index.html":
            raise _api_error(404, f"no static file {name!r}", "not_found")
        return FileResponse(STATIC / name, media_type=STATIC_FILES[name] + "; charset=utf-8")

    @router.get("/ui/api/info")
    async def ui_info(request: Request) -> dict[str, Any]:
        keys: list[dict[str, str]] = []
        if schema is not None:
            for key, spec in schema.skeleton().items():
                kind = (
                    "list"
                    if isinstance(spec, list)
                    else "dict"
                    if isinstance(spec, dict)
                    else "text"
                )
                keys.append({"key": key, "kind": kind})
        return {
            "schema": getattr(schema, "name", None),
            "keys": keys,
            "backend": extractor.info().get("backend"),
            "model": extractor.info().get("model"),
            "review": root is not None,
            "max_pages": doc_options.max_pages,
        }

    def text_field(value: Any, what: str, max_chars: int) -> str:
        """A form field as text, within the service's text limits (length, valid Unicode)."""
        if value is None:
            return ""
        if not isinstance(value, str):
            raise _api_error(400, f"'{what}' must be text, not a file", "invalid_request")
        try:
            return check_text(value, what, max_chars).strip()
        except InputRejected as e:
            raise _api_error(e.status, str(e), e.code) from None

    async def json_body(request: Request) -> Any:
        """The JSON body, parsed within the service's limits (size, depth, number length)."""
        body = await request.body()
        try:
            return await service.cpu_call(loads_bounded, body, json_limits)
        except JsonLimitError as e:
            raise _api_error(400, f"body: {e}", "invalid_json") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise _api_error(400, f"body is not valid JSON ({e})", "invalid_json") from None

    # ------------------------------------------------------------ extract

    async def acquire_pixels(request: Request, pixels: int) -> int:
        """Reserve `pixels` (at most the whole budget) of the service's decode budget within
        the request's deadline; 503 when it stays full. Returns what to release."""
        budget = service.pixel_budget
        cost = min(pixels, budget.total)
        left = max(0.0, request.scope["state"]["deadline"] - time.monotonic())
        try:
            await budget.acquire(cost, left)
        except BudgetTimeout:
            raise _api_error(
                503, "busy: images being decoded are at the pixel limit; retry later", "overloaded"
            ) from None
        return cost

    async def image_preview(request: Request, data: bytes) -> tuple[dict[str, Any], str]:
        """Page info and a preview of an uploaded image (decoded within the pixel budget,
        JPEGs at a reduced size)."""
        budget = service.pixel_budget

        def size() -> tuple[int, int]:
            with Image.open(io.BytesIO(data)) as im:
                return im.size

        w, h = await service.cpu_call(size)
        cost = await acquire_pixels(request, w * h)
        try:

            def work() -> str:
                with Image.open(io.BytesIO(data)) as im:
                    im.draft("RGB", (PREVIEW_MAX_SIDE, PREVIEW_MAX_SIDE))
                    return _preview(ImageOps.exif_transpose(im))

            preview = await service.cpu_call(work)
        finally:
            budget.release(cost)
        info = {"page": 1, "n_pages": 1, "kind": "image", "size": [w, h], "text_layer": False}
        return info, preview

    async def rendered_page(
        request: Request, data: bytes, doc_id: str, name: str, options: DocumentOptions
    ) -> tuple[Page, bytes, str]:
        """Render one PDF/OFD page (holding its pixels in the service's decode budget):
        the page, its PNG for the model, its preview."""
        budget = service.pixel_budget
        cost = await acquire_pixels(request, options.max_pixels)
        try:

            def work() -> tuple[Page, bytes, str]:
                page = load_pages(data, doc_id=doc_id, name=name, options=options)[0]
                return page, _png(page.image), _preview(page.image)

            try:
                return await service.cpu_call(work)
            except DocumentError as e:
                raise _api_error(400, str(e), "invalid_document") from None
        finally:
            budget.release(cost)

    async def extract_document(
        request: Request,
        data: bytes,
        name: str,
        prompt: str,
        *,
        full_request: bool,
        options: DocumentOptions | None = None,
        batch: str | None = None,
        previews: bool = True,
    ) -> dict[str, Any]:
        """Every selected page of an image / PDF / OFD through the service's extraction:
        per page its fields, validation, confidence (and a preview); the merged document,
        its validation and the duplicate it repeats within `batch`. Also answers
        ``POST /v1/extract`` for PDF and OFD uploads (``router.extract_document``)."""
        options = options or doc_options
        doc_id = Path(name).stem or "upload"
        kind = sniff_kind(data, name)
        try:
            n_pages = await service.cpu_call(lambda: count_pages(data, name=name, options=options))
            numbers = select_pages(n_pages, options, name)
        except DocumentError as e:
            raise _api_error(400, str(e), "invalid_document") from None
        digest = content_hash(data)
        t = tracker(batch)
        out_pages = []
        for number in numbers:
            if kind == "image":
                # the service decodes the upload itself (its pixel limits and budget)
                result = await run_extraction(request, data, prompt)
                info, payload_preview = (
                    await image_preview(request, data) if previews else (_image_info(data), "")
                )
                page_id = doc_id
            else:
                # one rendered page at a time, its pixels held in the service's decode budget
                page, payload, payload_preview = await rendered_page(
                    request, data, doc_id, name, replace(options, pages=(number,))
                )
                result = await run_extraction(request, payload, prompt)
                info, page_id = page.info(), page.page_id
                del payload, page
            validation = (
                validate_prediction(result.fields, schema, request=result.request).to_dict()
                if schema is not None
                else None
            )
            out_pages.append(
                {
                    "page_id": page_id,
                    **info,
                    **({"preview": payload_preview} if previews else {}),
                    "fields": result.fields,
                    "raw_output": result.raw_output,
                    "parse": result.parse.to_dict(),
                    "prompt": result.prompt,
                    "latency_s": round(result.latency_s, 4),
                    "usage": result.usage,
                    "validation": validation,
                    "confidence": _confidence(result),
                }
            )
        merged = merge_pages([p["fields"] for p in out_pages]) if len(out_pages) > 1 else None
        doc_fields = merged if merged is not None else out_pages[0]["fields"]
        # `required` only when everything was asked for (a field subset is not incomplete)
        doc_validation = (
            validate_prediction(doc_fields, schema, request={} if full_request else None).to_dict()
            if schema is not None
            else None
        )
        upload_id = f"ui-{uuid.uuid4().hex[:12]}"
        duplicate = None
        if t is not None:
            dup_tracker, names = t
            names[upload_id] = name
            dup = dup_tracker.check(upload_id, fields=doc_fields, digest=digest)
            if dup is not None:
                duplicate = {**dup.to_dict(), "duplicate_of": names.get(dup.duplicate_of, "?")}
                duplicate["duplicate_of_id"] = dup.duplicate_of
        return {
            "id": upload_id,
            "document": name,
            "doc_id": doc_id,
            "kind": kind,
            "n_pages": n_pages,
            "sha256": digest,
            "pages": out_pages,
            "fields": doc_fields,
            "validation": doc_validation,
            "duplicate": duplicate,
            "system": f"{extractor.info().get('backend')}:{extractor.info().get('model')}",
        }

    @router.post("/ui/api/extract")
    async def ui_extract(request: Request) -> dict[str, Any]:
        form = await request.form(max_files=1, max_fields=8, max_part_size=64 * 1024)
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise _api_error(400, "missing 'file' (an image, PDF or OFD)", "invalid_image")
        name = upload.filename or "upload"
        data = await upload.read()
        if not data:
            raise _api_error(400, f"{name}: empty file", "invalid_image")
        fields_text = text_field(form.get("fields"), "fields", limits.max_prompt_chars)
        query = [k.strip() for k in fields_text.replace("，", ",").split(",") if k.strip()] or None
        prompt = await service.cpu_call(resolve_prompt, query)
        try:
            options = DocumentOptions(
                max_pixels=doc_options.max_pixels,
                max_image_pixels=doc_options.max_image_pixels,
                max_pages=doc_options.max_pages,
                pages=text_field(form.get("pages"), "pages", 200) or None,
            )
        except ValueError as e:
            raise _api_error(400, str(e), "invalid_pages") from None
        return await extract_document(
            request,
            data,
            name,
            prompt,
            full_request=query is None,
            options=options,
            batch=text_field(form.get("batch"), "batch", 128) or None,
        )

    @router.post("/ui/api/excel")
    async def ui_excel(request: Request) -> Response:
        body = await json_body(request)
        rows = body.get("rows") if isinstance(body, dict) else None
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise _api_error(400, "'rows' must be a list of prediction rows", "invalid_request")
        data = await asyncio.to_thread(_excel_bytes, rows, schema)
        return Response(
            data,
            media_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            headers={"Content-Disposition": 'attachment; filename="predictions.xlsx"'},
        )

    # ------------------------------------------------------------ review

    def source_path(rel: str | None) -> Path:
        if root is None:
            raise _api_error(
                403, "review is off: start the service with KIE_REVIEW_ROOT=<folder>", "review_off"
            )
        if not rel:
            raise _api_error(400, "missing 'source'", "invalid_request")
        path = (root / rel).resolve()
        if not path.is_relative_to(root) or path.suffix != ".jsonl":
            raise _api_error(403, f"{rel}: not a .jsonl file under the review root", "forbidden")
        if not path.is_file():
            raise _api_error(404, f"{rel}: no such file under the review root", "not_found")
        return path

    def items_of(path: Path, threshold: float) -> list[Any]:
        try:
            return load_review_items(path, schema, threshold=threshold)
        except ReviewError as e:
            raise _api_error(400, str(e), "invalid_source") from None

    @router.get("/ui/api/review/sources")
    async def review_sources(request: Request) -> dict[str, Any]:
        if root is None:
            return {"enabled": False, "sources": []}
        found: list[str] = []
        for p in sorted(root.rglob("*.jsonl")):
            if p.name == NEEDS_REVIEW or (
                "pred" in p.name and p.name != "reviewed.jsonl" and not p.name.startswith(".")
            ):
                found.append(p.relative_to(root).as_posix())
            if len(found) >= MAX_SOURCES:
                break
        return {"enabled": True, "root": str(root), "sources": found}

    @router.get("/ui/api/review/items")
    async def review_items(request: Request, source: str, threshold: float = 0.9) -> dict[str, Any]:
        path = source_path(source)
        items = await asyncio.to_thread(items_of, path, threshold)
        return {
            "source": source,
            "reviewed_file": str(reviewed_path(path)),
            "items": [it.to_dict() for it in items],
        }

    @router.get("/ui/api/review/image")
    async def review_image(request: Request, source: str, id: str) -> Response:
        path = source_path(source)
        items = await asyncio.to_thread(items_of, path, 0.9)
        item = next((it for it in items if it.id == id), None)
        if item is None:
            raise _api_error(404, f"{source}: no item {id!r}", "not_found")
        if not item.image_path.is_file():
            raise _api_error(404, f"{item.image_path}: image not found", "not_found")
        page = id.rsplit("#p", 1)[1] if "#p" in id and id.rsplit("#p", 1)[1].isdigit() else None
        try:
            pages = await asyncio.to_thread(
                load_pages,
                item.image_path,
                options=DocumentOptions(pages=page, max_pages=UI_MAX_PAGES, text_layer=False),
            )
        except DocumentError as e:
            raise _api_error(400, str(e), "invalid_document") from None
        im = pages[0].image.copy()
        im.thumbnail((2000, 2000))
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=85)
        return Response(buf.getvalue(), media_type="image/jpeg")

    @router.post("/ui/api/review/save")
    async def review_save(request: Request) -> dict[str, Any]:
        body = await json_body(request)
        if not isinstance(body, dict):
            raise _api_error(400, "body must be a JSON object", "invalid_json")
        path = source_path(body.get("source"))
        try:
            threshold = float(body.get("threshold") or 0.9)
        except (TypeError, ValueError):
            raise _api_error(400, "'threshold' must be a number", "invalid_request") from None
        items = await asyncio.to_thread(items_of, path, threshold)
        item = next((it for it in items if it.id == body.get("id")), None)
        if item is None:
            raise _api_error(404, f"{body.get('source')}: no item {body.get('id')!r}", "not_found")
        fields = body.get("fields")
        if not isinstance(fields, dict):
            raise _api_error(400, "'fields' must be an object", "invalid_request")
        try:
            rec = reviewed_record(
                item, fields, action=str(body.get("action") or "edit"), schema=schema
            )
        except ReviewError as e:
            raise _api_error(400, str(e), "invalid_fields") from None
        out = reviewed_path(path)

        def save() -> None:
            with save_lock:
                append_reviewed(out, rec)

        await asyncio.to_thread(save)
        log.info("review of %s saved to %s", item.id, out)
        return {
            "saved": True,
            "id": item.id,
            "reviewed_file": str(out),
            "validation": rec.meta["reviewed"].get("validation"),
        }

    router.extract_document = extract_document  # type: ignore[attr-defined]
    return router


def _image_info(data: bytes) -> dict[str, Any]:
    with Image.open(io.BytesIO(data)) as im:
        w, h = im.size
    return {"page": 1, "n_pages": 1, "kind": "image", "size": [w, h], "text_layer": False}


def _excel_bytes(rows: list[dict[str, Any]], schema: Any) -> bytes:
    from data_tools.jsonl import write_jsonl_atomic
    from inference.predict import write_excel

    with tempfile.TemporaryDirectory(prefix="kie-ui-") as tmp:
        pred = Path(tmp) / "predictions.jsonl"
        write_jsonl_atomic(pred, rows)
        xlsx = Path(tmp) / "predictions.xlsx"
        write_excel(pred, xlsx, schema)
        return xlsx.read_bytes()
