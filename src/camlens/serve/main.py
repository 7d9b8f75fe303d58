"""The web app (FastAPI, imported lazily) and the server that runs it (``camlens serve`` is :mod:`camlens.cli.serve`).

The JSON API (its OpenAPI schema at ``/openapi.json``):

* ``POST /api/explain``: the image as the raw request body (or ``image_id`` of an earlier upload, or
  ``example``), options in the query string -> top-k classes, layer, the first class's maps as PNG data
  URLs, ``run_id`` and ``image_id``.
* ``GET /api/runs/{run_id}/classes/{class_id}``: another top-k class's maps from the kept run (no model run).
* An image-text network (open_clip, Hugging Face CLIP) takes ``prompt`` (repeated) on ``/api/explain``: each
  prompt is a "class", explained by :func:`camlens.explain_text`.
* A detector (torchvision's, YOLO, or ``--model`` returning ``(model, DetectorAdapter)``) explains each box it
  finds (``score_threshold``, ``max_boxes``): each box is a "class" whose entry holds ``box`` (x1, y1, x2, y2 in
  the image's pixels), ``view_box`` (the same at the view's size), ``class``, ``class_name`` and ``score``.
* ``GET /api/options``, ``GET /api/layers``, ``GET /api/health`` (``model_runs`` counts model runs).

No ``from __future__ import annotations`` here: FastAPI reads the endpoints' annotations at runtime, and
they name classes imported inside :func:`create_app` (FastAPI is imported only when an app is built).
"""

import asyncio
import functools
import importlib.util
import signal
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from camlens.errors import UsageError
from camlens.serve.guard import CONTENT_SECURITY_POLICY as CONTENT_SECURITY_POLICY
from camlens.serve.guard import Guard, allowed_hosts
from camlens.serve.limits import MAX_UPLOAD_BYTES, MAX_UPLOAD_PIXELS, ServeError, megabytes
from camlens.zoo import DEFAULT_NETWORK, SEED_NETWORKS, Network

if TYPE_CHECKING:
    from fastapi import FastAPI

    from camlens.serve.explorer import Explorer

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
STATIC = Path(__file__).parent / "static"
SOURCE_EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
IMAGE_BODY = {
    "requestBody": {
        "required": False,
        "description": "The image file's bytes (JPEG, PNG, ...) as the raw body; leave empty to use image_id "
        "or example.",
        "content": {
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "image/*": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


def require_extra() -> None:
    """Import the ``serve`` extra's packages, or raise one line naming the install command."""
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as error:
        raise UsageError(
            f"camlens serve needs FastAPI and uvicorn ({error.name} is not installed): pip install camlens[serve]"
        ) from None


def create_app(
    network: "Network | str | Explorer" = DEFAULT_NETWORK,
    networks: Sequence[str] = SEED_NETWORKS,
    *,
    device: str = "cpu",
    examples_dir: str | Path | None = SOURCE_EXAMPLES,
    topk: int = 5,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
    max_upload_pixels: int = MAX_UPLOAD_PIXELS,
    hosts: Sequence[str] | None = None,
) -> "FastAPI":
    """The viewer as an ASGI app: the page at ``/``, the JSON API under ``/api``.

    Args:
        network: the network shown first (a loaded :class:`~camlens.zoo.Network`, a name, or a ready
            :class:`~camlens.serve.explorer.Explorer`, which then brings its own settings).
        networks: further network names the page offers (loaded offline on first use).
        device: where the models run.
        examples_dir: a folder whose ``*.jpg`` the page offers as examples (None: none).
        topk: classes explained per upload.
        max_upload_bytes: larger request bodies get 413.
        max_upload_pixels: images with more pixels get 413.
        hosts: the Host header values answered (others get 400), e.g. ``allowed_hosts("127.0.0.1", 8000)``;
            None: any (:func:`run` adds the check for the address it binds). Cross-origin requests,
            form-type bodies and framing are refused either way (:mod:`camlens.serve.guard`).
    """
    require_extra()
    from fastapi import FastAPI, Query, Request
    from fastapi.responses import FileResponse, JSONResponse, Response
    from fastapi.staticfiles import StaticFiles
    from starlette.requests import ClientDisconnect

    from camlens.serve.explorer import Explorer

    explorer = (
        network
        if isinstance(network, Explorer)
        else Explorer(
            network,
            networks,
            device=device,
            examples_dir=examples_dir,
            topk=topk,
            max_upload_bytes=max_upload_bytes,
            max_upload_pixels=max_upload_pixels,
        )
    )
    app = FastAPI(
        title="camlens",
        description="Grad-CAM-family explanations of a vision model's predictions, served locally.",
        version=_version(),
        docs_url=None,  # FastAPI's Swagger UI and ReDoc pages load scripts from a CDN: not offline
        redoc_url=None,
    )
    app.state.explorer = explorer
    # Decoding, the model and PNG encoding run in one worker thread, not in a pool of up to 40: each
    # thread that allocates gets its own malloc arena, and concurrent requests (the page prefetches the
    # other classes) grew the resident memory by gigabytes in freed-but-kept arena memory.
    worker = ThreadPoolExecutor(1, thread_name_prefix="camlens-serve")
    app.state.worker = worker

    async def work(function: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(worker, functools.partial(function, *args))

    app.add_middleware(Guard, hosts=hosts)  # plain ASGI: Host, Origin, body type, security headers

    @app.exception_handler(ServeError)
    async def refused(_request: Request, error: ServeError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=error.status)

    @app.exception_handler(Exception)
    async def failed(_request: Request, error: Exception) -> JSONResponse:
        message = (str(error).strip().splitlines() or [""])[0][:300]
        return JSONResponse({"detail": f"internal error: {type(error).__name__}: {message}"}, status_code=500)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/api/health", summary="Liveness and the number of model runs so far")
    def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "model_runs": explorer.model_runs,
            "metric_runs": explorer.metric_runs,
            "cached_images": len(explorer.uploads),
            "cached_runs": len(explorer.runs),
        }

    @app.get("/api/options", summary="Networks, methods, examples and limits the page offers")
    def options() -> dict[str, Any]:
        import camlens
        from camlens.text import available_text_methods

        return {
            "network": explorer.default_network,
            "networks": explorer.networks_info(),
            "methods": camlens.available_methods(),
            "text_methods": available_text_methods(),
            "default_methods": list(camlens.SEED_METHODS),
            "topk": explorer.topk,
            "examples": explorer.examples(),
            "max_upload_bytes": explorer.max_upload_bytes,
            "max_upload_pixels": explorer.max_upload_pixels,
            "colormaps": colormaps(),
            "faithfulness": importlib.util.find_spec("camlens.metrics") is not None,
        }

    @app.get("/api/layers", summary="A network's spatial layers (forward order) and its default target layer")
    async def layers(network: str | None = None) -> dict[str, Any]:
        names, default = await work(explorer.layers, network)
        return {
            "network": network or explorer.default_network,
            "layers": names,
            "default": default,
            "prompts": explorer.is_text(explorer.network(network)),
            "detector": explorer.is_detector(explorer.network(network)),
        }

    @app.get("/api/examples/{name}", summary="An example image's bytes")
    def example_image(name: str) -> Response:
        return Response(explorer.example_path(name).read_bytes(), media_type="image/jpeg")

    @app.post("/api/explain", summary="Explain an image's top-k classes", openapi_extra=IMAGE_BODY)
    async def explain(
        request: Request,
        image_id: str | None = None,
        example: str | None = None,
        filename: str = "upload",
        network: str | None = None,
        layer: str | None = None,
        methods: str | None = None,
        counterfactual: bool = False,
        topk: int | None = None,
        all_classes: bool = False,
        prompt: list[str] | None = Query(None),  # noqa: B008 - FastAPI's way to take a repeated parameter
        score_threshold: float | None = None,
        max_boxes: int | None = None,
    ) -> dict[str, Any]:
        """Send the image as the raw body (``curl -H 'Content-Type: application/octet-stream'
        --data-binary @cat.jpg``; text and form types get 415), or ``image_id`` of an earlier upload, or
        ``example``. ``methods`` is comma-separated (default: the four seed methods); ``layer``
        a name from ``/api/layers`` (default: the network's default). The answer holds the top-k classes
        and the first class's maps (all classes' with ``all_classes=true``); other classes come from
        ``/api/runs/{run_id}/classes/{class_id}`` without running the model again. An image-text network
        (open_clip, Hugging Face CLIP) explains each ``prompt`` (repeat the parameter, up to 16) instead:
        its "classes" are the prompts in order, with the cosines as scores. A detector explains each box it
        finds (score at least ``score_threshold``, default 0.5; the best ``max_boxes``, default 20): its
        "classes" are the boxes, each entry with its ``box``, ``view_box``, ``class``, ``class_name``, ``score``."""
        if request.headers.get("content-type", "").startswith("multipart/"):
            raise ServeError("send the image's bytes as the request body, not as a form (curl --data-binary)", 415)
        names = [m.strip() for m in methods.split(",") if m.strip()] if methods else None
        net, *_ = await work(explorer.check, network, layer or None, names, topk)  # before keeping an image
        prompts = explorer.check_prompts(net, prompt)
        if explorer.is_detector(net):
            explorer.check_boxes(score_threshold, max_boxes)
        try:
            data = await _read_capped(request, explorer.max_upload_bytes, filename)
        except ClientDisconnect:  # the client hung up while sending: nobody to answer, nothing to log
            raise ServeError("the client disconnected before sending the whole image", 400) from None
        if data:
            upload = await work(explorer.add_upload, data, filename[:100])
        elif image_id:
            upload = explorer.upload(image_id)
        elif example:
            upload = await work(explorer.example, example)
        else:
            raise ServeError("no image: send its bytes as the request body, or give image_id or example", 400)
        run = await work(
            explorer.explain, upload, network, layer or None, names, counterfactual, topk, prompts, score_threshold,
            max_boxes,
        )  # fmt: skip
        return await work(explorer.describe, run, all_classes)

    @app.get(
        "/api/runs/{run_id}/classes/{class_id}/faithfulness",
        summary="Deletion and insertion curves of the class's CAM maps (needs camlens.metrics)",
    )
    async def faithfulness(run_id: str, class_id: int, steps: int = 20) -> dict[str, Any]:
        run = explorer.run(run_id)
        return await work(explorer.faithfulness, run, class_id, steps)

    @app.get("/api/runs/{run_id}/classes/{class_id}", summary="Maps of another top-k class (no model run)")
    async def class_maps(run_id: str, class_id: int) -> dict[str, Any]:
        run = explorer.run(run_id)
        maps = await work(explorer.class_maps, run, class_id)
        return {"run_id": run_id, "class_id": class_id, "maps": maps, "model_runs": explorer.model_runs}

    return app


def colormaps() -> dict[str, list[list[int]]]:
    """Every colour map of :mod:`camlens.viz.annotate` as a 256-entry RGB table, for the page.

    Example:
        >>> colormaps()["gray"][255]
        [255, 255, 255]
    """
    import numpy as np

    from camlens.viz.annotate import COLORMAPS, colorize

    ramp = np.linspace(0.0, 1.0, 256)
    return {name: colorize(ramp, name).tolist() for name in COLORMAPS}


async def _read_capped(request: Any, limit: int, name: str) -> bytes:
    """The request body, refused with 413 as soon as it passes ``limit`` bytes (never buffered beyond it)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ServeError(f"{name} is too large ({megabytes(int(declared))}; the limit is {megabytes(limit)})", 413)
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise ServeError(f"{name} is too large (more than the limit, {megabytes(limit)})", 413)
        chunks.append(chunk)
    return b"".join(chunks)


def _version() -> str:
    import camlens

    return camlens.__version__


def run(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    app: "FastAPI | None" = None,
    *,
    allowed: Sequence[str] = (),
    **options: Any,
) -> None:
    """Serve ``app`` (default: ``create_app(**options)``) until interrupted, after printing its URL.

    Only requests whose Host names the bound address (127.0.0.1, localhost, [::1], ``host``; with the
    port) or one of ``allowed`` are answered; others get 400. Ctrl-C (SIGINT) stops the server and then
    raises ``KeyboardInterrupt``, so the command exits 130.
    """
    require_extra()
    import uvicorn

    if not 1 <= port <= 65535:
        raise UsageError(f"--port {port} is not a port number (1-65535)")
    app = app if app is not None else create_app(**options)
    shown = f"[{host}]" if ":" in host else host
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"camlens serve: warning: bound to {host}: other machines can reach this server "
            "(name each Host they use with --allowed-host)",
            file=sys.stderr,
        )
    print(f"camlens serve: http://{shown}:{port}/  (API: http://{shown}:{port}/openapi.json; Ctrl+C stops)", flush=True)
    config = uvicorn.Config(Guard(app, allowed_hosts(host, port, allowed)), host=host, port=port, log_level="warning")
    server = _Server(config)
    server.run()  # uvicorn raises a caught SIGINT again after its shutdown; where it is swallowed, do it here
    if server.stopped_by == signal.SIGINT:
        raise KeyboardInterrupt


class _Server:  # replaced by a uvicorn.Server subclass on first use (uvicorn is imported lazily)
    def __new__(cls, config: Any) -> Any:
        import uvicorn

        class Server(uvicorn.Server):
            stopped_by: int | None = None

            def handle_exit(self, sig: int, frame: Any) -> None:
                self.stopped_by = self.stopped_by or sig
                super().handle_exit(sig, frame)

        return Server(config)
