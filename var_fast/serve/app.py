"""The FastAPI application of ``var-fast serve``: the page, ``/api/info``, ``/api/generate`` (JSON, or
NDJSON scale by scale with ``"preview": true``) and ``/api/edit``. Errors are one line of JSON
(``{"error": ...}``), never a traceback; a full queue answers 503 with Retry-After."""
from __future__ import annotations

import asyncio
import base64
import json
import os
import shlex
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse

from var_fast.serve.batcher import Batcher, Busy, Job
from var_fast.serve.requests import Limits, RequestError, parse_edit, parse_generate

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
PAGE_FILES = {"/": ("index.html", "text/html; charset=utf-8"), "/app.js": ("app.js", "text/javascript"),
              "/style.css": ("style.css", "text/css")}


@dataclass
class ModelInfo:
    """What the page and the API say about the served model."""
    name: str
    cli_flags: str                  # how `var-fast sample/edit` names this model ("" for the bundled one)
    class_names: List[str]
    image_size: int
    patch_nums: List[int]
    defaults: Dict[str, float]      # cfg, top_k, top_p the page starts with and the API uses when absent
    backend: str
    device: str
    dtype: str
    max_batch: int


def _b64(png: bytes) -> str:
    return base64.b64encode(png).decode("ascii")


def _reproduce(info: ModelInfo, settings: Dict[str, Any]) -> str:
    """The var-fast command line that makes the same image(s) (same device and dtype)."""
    common = (f" --cfg {settings['cfg']:g} --top-k {settings['top_k']} --top-p {settings['top_p']:g} "
              f"--seed {settings['seed']} --device {info.device} --dtype {info.dtype}")
    if settings["kind"] == "generate":
        return (f"var-fast sample{info.cli_flags} --classes {settings['label']} --per-class {settings['n']}"
                f"{common} --out samples")
    label = "" if settings["label"] is None else f" --class {settings['label']}"
    return f"var-fast edit{info.cli_flags} --image input.png --mask mask.png{label}{common} --out edited.png"


def _settings(info: ModelInfo, request) -> Dict[str, Any]:
    s = request.settings()
    label = s["label"]
    s.update(model=info.name, class_name=None if label is None else info.class_names[label],
             backend=info.backend, device=info.device, dtype=info.dtype)
    s["command"] = _reproduce(info, s)
    return s


async def _read_json(request: Request, limit: int) -> Any:
    """The body as JSON, refusing more than ``limit`` bytes (declared or actually sent) without reading on."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise RequestError(f"the request body is larger than {limit} bytes", status=413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(f"the request body is larger than {limit} bytes", status=413)
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks))
    except (ValueError, UnicodeDecodeError):
        raise RequestError("the request body is not valid JSON") from None


def _error(message: str, status: int) -> JSONResponse:
    headers = {"Retry-After": "2"} if status == 503 else None
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def create_app(batcher: Batcher, info: ModelInfo, limits: Limits) -> FastAPI:
    sampler = batcher.sampler
    app = FastAPI(title="var-fast serve", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(RequestError)
    async def request_error(_, err: RequestError):
        return _error(str(err), err.status)

    @app.exception_handler(Busy)
    async def busy(_, err: Busy):
        return _error(str(err), 503)

    @app.exception_handler(Exception)
    async def internal(_, err: Exception):  # logged by uvicorn; the client gets one line
        return _error(f"internal error: {type(err).__name__}", 500)

    for route, (filename, media) in PAGE_FILES.items():  # fixed files: no path comes from the client
        def page(filename=filename, media=media):
            with open(os.path.join(STATIC, filename), "rb") as f:
                return Response(f.read(), media_type=media, headers={"Cache-Control": "no-cache"})
        app.add_api_route(route, page, methods=["GET"], include_in_schema=False)

    @app.get("/api/info")
    def api_info():
        return dict(asdict(info), limits=asdict(limits), num_classes=len(info.class_names))

    @app.get("/api/health")
    def api_health():
        return {"status": "ok", "queued": batcher.queued(), "max_queue": batcher.max_queue}

    @app.get("/api/stats")
    def api_stats():
        return batcher.stats()

    def submit(request, loop) -> tuple:
        events: asyncio.Queue = asyncio.Queue()

        def emit(event):  # from the worker thread; a closed loop (client long gone) is no one else's problem
            try:
                loop.call_soon_threadsafe(events.put_nowait, event)
            except RuntimeError:
                pass

        job = Job(request, emit)
        batcher.submit(job)
        return job, events

    async def answer(http: Request, request, stream: bool):
        job, events = submit(request, asyncio.get_running_loop())
        settings = _settings(info, request)
        if stream:
            async def lines():
                try:
                    while True:
                        ev = await events.get()
                        if "images" in ev:
                            ev = dict(ev, images=[_b64(png) for png in ev["images"]])
                        if ev["event"] == "done":
                            ev["settings"] = settings
                        yield json.dumps(ev) + "\n"
                        if ev["event"] in ("done", "error"):
                            return
                finally:
                    job.cancelled.set()  # normal end or a client that went away: nothing more to send
            return StreamingResponse(lines(), media_type="application/x-ndjson")
        try:
            while True:
                try:
                    ev = await asyncio.wait_for(events.get(), timeout=0.05)  # a client that hung up is dropped before its turn
                except asyncio.TimeoutError:
                    if await http.is_disconnected():
                        return Response(status_code=499)
                    continue
                if ev["event"] == "done":
                    return {"images": [_b64(png) for png in ev["images"]], "settings": settings}
                if ev["event"] == "error":
                    return _error(ev["message"], ev["status"])
        finally:
            job.cancelled.set()

    @app.post("/api/generate")
    async def api_generate(http: Request):
        body = await _read_json(http, limits.max_body_bytes)
        request = parse_generate(body, len(info.class_names), info.defaults, limits)
        return await answer(http, request, stream=request.preview)

    @app.post("/api/edit")
    async def api_edit(http: Request):
        body = await _read_json(http, limits.max_body_bytes)
        request = await asyncio.to_thread(parse_edit, body, len(info.class_names), info.image_size,
                                          info.patch_nums[-1], info.defaults, limits)
        return await answer(http, request, stream=False)

    return app
