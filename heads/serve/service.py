"""`serve`: a run behind HTTP (FastAPI under uvicorn). Routes are thin: they check the request, hand
the photo to a dynamic batch (`heads.serve.batching`) whose worker calls the `Predictor` methods
`predict` calls, and return its entries: the server and the command line cannot disagree.

  POST /v1/predict  the photo as the request body (Content-Type image/* or application/octet-stream)
                    or as the multipart field "image"; query faces=all|best|none, min_face=N (as
                    `predict --faces/--min-face`; default faces: all for a run on an --align cache,
                    else none) -> 200 with the object `predict --json` gives for the photo, without
                    "image" (a photo without a face: 200, "ok": false, its error)
  GET  /v1/run      the run: attributes, thresholds, head, backbones, preprocessing, alignment, test metrics
  GET  /healthz     200 {"status": "ok"} (the run is loaded before the server listens)
  GET  /metrics     Prometheus text: requests by route and status, latency, batch sizes, photos, faces
  GET  /openapi.json
  GET  /            the page (page.html beside this module: one offline file, its script inline, a
                    Content-Security-Policy that lets it load nothing from elsewhere): a photo dropped
                    or chosen, or the webcam's frames, with every face's box and attributes drawn

Every refusal is one line of JSON, {"error": "..."}: 400 (empty, not an image, truncated, a bad or
unknown query parameter, no multipart field "image"), 401 (the bearer token, when one is set),
404, 408 (the body did not arrive within request_timeout), 413 (a body over max_bytes, refused from
its Content-Length before it is read, or as soon as it passes the limit; a photo over max_pixels,
refused from its header before decoding), 415 (another content type), 503 (max_queue requests
already wait for a batch). The server opens no path a client names and sends no CORS headers
unless given origins.
"""

import asyncio
import hmac
import io
import ipaddress
import logging
import signal
import socket
import time
from collections import defaultdict
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NamedTuple

import uvicorn
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.exceptions import HTTPException

from cache.errors import UsageError, UserError
from embed.defaults import MAX_PIXELS
from heads.defaults import SERVE
from heads.serve.batching import Batcher, QueueFull

log = logging.getLogger(__name__)
ROUTES = ("/", "/v1/predict", "/v1/run", "/healthz", "/metrics", "/openapi.json")
PAGE = Path(__file__).with_name("page.html")
PAGE_POLICY = ("default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' blob: data:; "
               "media-src 'self' blob: mediastream:; connect-src 'self'; frame-ancestors 'none'")
BODY_TYPES = ("image/", "application/octet-stream")
TOKEN_ENV = SERVE["token_env"]


@dataclass(frozen=True)
class Limits:
    """What one request may cost: body bytes, photo pixels (from its header), seconds to send the
    body; and the dynamic batch: its size, its first request's wait (s), batches run at once,
    requests waiting."""
    max_bytes: int = SERVE["max_bytes"]
    max_pixels: int = MAX_PIXELS
    request_timeout: float = SERVE["request_timeout"]
    max_batch: int = SERVE["max_batch"]
    max_wait: float = SERVE["max_wait"]
    workers: int = SERVE["workers"]
    max_queue: int = SERVE["max_queue"]


@dataclass(frozen=True)
class Access:
    """Who may call: a bearer token for the /v1 routes (None: anyone), CORS origins (none: no CORS)."""
    token: str = None
    cors_origins: tuple = field(default_factory=tuple)


class Refused(Exception):
    """A request answered with `status` and {"error": message}."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


class Upload(NamedTuple):
    data: bytes
    faces: str
    min_face: int


def is_loopback(host):
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_access(host, token, no_auth):
    """Binding anything but loopback needs a token or an explicit no_auth (UsageError otherwise)."""
    if token is not None and not token.strip():
        raise UsageError("--token: empty; give a secret (or set it in $" + TOKEN_ENV + ")")
    if token and no_auth:
        raise UsageError("--token and --no-auth contradict each other")
    if not is_loopback(host) and not token and not no_auth:
        raise UsageError(f"--host {host} listens beyond this machine: give --token (or ${TOKEN_ENV}) so every "
                         "/v1 request needs it, or --no-auth to serve without one")


class Metrics:
    """The Prometheus series an operator watches, in a registry of this app's own."""

    def __init__(self, batcher):
        self.registry = CollectorRegistry()
        self.requests = Counter("celeba_heads_requests", "HTTP requests by route and status", ["route", "status"],
                                registry=self.registry)
        self.latency = Histogram("celeba_heads_request_seconds", "Request latency, from its start to its answer", ["route"],
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
                                 registry=self.registry)
        self.batch = Histogram("celeba_heads_batch_size", "Photos per dynamic batch",
                               buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=self.registry)
        self.photos = Counter("celeba_heads_photos", "Photos predicted", registry=self.registry)
        self.faces = Counter("celeba_heads_faces", "Faces predicted", registry=self.registry)
        Gauge("celeba_heads_queue_waiting", "Requests waiting for a batch",
              registry=self.registry).set_function(lambda: batcher.waiting)
        Gauge("celeba_heads_requests_in_flight", "Photos submitted and not yet answered",
              registry=self.registry).set_function(lambda: batcher.pending)

    def text(self):
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _Measured:
    """ASGI middleware: every HTTP request counted by route and status, and timed."""

    def __init__(self, app, metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        route = scope["path"] if scope["path"] in ROUTES else "other"
        status, began = [500], time.perf_counter()

        async def sending(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)
        try:
            await self.app(scope, receive, sending)
        finally:
            self.metrics.requests.labels(route, str(status[0])).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - began)


def describe_run(predictor):
    """GET /v1/run: what the run is and what it scored."""
    from heads.serve.predict import run_alignment
    run = predictor.run
    return {"run": run.path.name, "head": run.head_name, "kind": run.kind, "attributes": run.attributes,
            "thresholds": dict(zip(run.attributes, run.thresholds)),
            "backbones": [{"backbone": c.get("backbone"), "preprocessing": c.get("preprocessing"),
                           "feature_dim": c.get("feature_dim")} for c in run.caches],
            "inputs": list(run.inputs), "views": run.views, "eval_view": run.eval_view,
            "alignment": run_alignment(run), "default_faces": "all" if run_alignment(run) else "none",
            "test": {a: m.get("test") for a, m in run.metrics["attributes"].items()}}


def photo_size(data, max_pixels):
    """(width, height) from the photo's header (Pillow reads only the header), or Refused: empty
    (400), not an image (400), over max_pixels (413). Nothing is decoded here."""
    import warnings

    from PIL import Image, UnidentifiedImageError
    if not data:
        raise Refused(400, "empty body: send the photo's bytes")
    try:
        with warnings.catch_warnings():  # Pillow warns of sizes it still opens; the limit below decides
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
    except Image.DecompressionBombError:  # a header far past Pillow's own limit
        width, height = None, None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise Refused(400, "not an image file in a format Pillow reads (JPEG, PNG, WebP, BMP, GIF, ...)") from None
    if width is None or width * height > max_pixels:
        size = "far more" if width is None else f"{width}x{height} = {width * height / 1e6:.1f} M pixels, more"
        raise Refused(413, f"image is {size} than the server's --max-pixels {max_pixels}")
    return width, height


class Service:
    """The loaded run and its batcher: `work` is what a batch runs (in the batcher's thread)."""

    def __init__(self, predictor, limits):
        self.predictor, self.limits = predictor, limits
        self.default_faces = describe_run(predictor)["default_faces"]
        self.batcher = Batcher(self.work, max_batch=limits.max_batch, max_wait=limits.max_wait,
                               max_queue=limits.max_queue, workers=limits.workers, on_batch=self._batched)
        self.metrics = Metrics(self.batcher)

    def _batched(self, size):
        self.metrics.batch.observe(size)

    def work(self, uploads):
        """[Upload] -> [entry as `predict --json` gives it, without "image"], grouped by (faces,
        min_face): each group through the detector (or the whole-image path) and the head at once."""
        from embed.faces import read_photo
        groups, entries = defaultdict(list), [None] * len(uploads)
        for k, upload in enumerate(uploads):
            groups[upload.faces, upload.min_face].append(k)
        for (faces, min_face), ks in groups.items():
            if faces == "none":
                found = self.predictor.image_entries([("", uploads[k].data) for k in ks], self.limits.max_pixels)
            else:
                items = [("", *read_photo(io.BytesIO(uploads[k].data), self.limits.max_pixels)) for k in ks]
                found = self.predictor.entries(items, faces, min_face)
            for k, entry in zip(ks, found):
                del entry["image"]
                entries[k] = entry
        self.metrics.photos.inc(len(uploads))
        self.metrics.faces.inc(sum(len(e.get("faces") or []) for e in entries))
        return entries

    async def predict(self, data, faces, min_face):
        """The entry for one photo's bytes, or Refused."""
        faces = faces or self.default_faces
        if faces == "none" and min_face is not None:
            raise Refused(400, "min_face needs faces=all or best")
        photo_size(data, self.limits.max_pixels)
        try:
            entry = await self.batcher.submit(Upload(data, faces, min_face))
        except QueueFull as exc:
            raise Refused(503, f"busy: {exc}; try again shortly") from None
        unreadable = entry["size"] is None if faces != "none" else not entry["ok"]
        if unreadable:  # truncated or corrupt past its header
            raise Refused(400, entry["error"])
        return entry


async def read_body(request, limits):
    """The request's body, at most limits.max_bytes (413 from Content-Length before reading, or as
    soon as the stream passes it), within limits.request_timeout seconds (408)."""
    length = request.headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise Refused(400, f"Content-Length {length!r} is not a number")
        if int(length) > limits.max_bytes:
            raise Refused(413, f"body of {int(length)} bytes is over the server's --max-bytes {limits.max_bytes}")
    chunks, size = [], 0

    async def collect():
        nonlocal size
        async for chunk in request.stream():
            size += len(chunk)
            if size > limits.max_bytes:
                raise Refused(413, f"body is over the server's --max-bytes {limits.max_bytes}")
            chunks.append(chunk)
    try:
        await asyncio.wait_for(collect(), limits.request_timeout)
    except TimeoutError:
        raise Refused(408, f"the body did not arrive within {limits.request_timeout:g} s") from None
    return b"".join(chunks)


async def photo_bytes(request, limits):
    """The photo from the body (image/*, application/octet-stream) or the multipart field "image"."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if not (kind.startswith(BODY_TYPES) or kind == "multipart/form-data"):
        raise Refused(415, f"Content-Type {kind or '(none)'!r}: send the photo as the body with Content-Type "
                           "image/* or application/octet-stream, or as the multipart/form-data field \"image\"")
    body = await read_body(request, limits)
    if kind != "multipart/form-data":
        return body

    async def replay():
        return {"type": "http.request", "body": body, "more_body": False}
    try:
        form = await Request(request.scope, replay).form(max_files=1, max_fields=8)
    except Exception as exc:  # noqa: BLE001 - the multipart parser's own errors, of several types
        raise Refused(400, f"malformed multipart body: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
    upload = form.get("image")
    if upload is None or isinstance(upload, str):
        raise Refused(400, "multipart body without a file field \"image\"")
    return await upload.read()


def make_app(predictor, limits=Limits(), access=Access()):
    """The ASGI app serving `predictor` (a heads.serve.predict.Predictor)."""
    service = Service(predictor, limits)

    @asynccontextmanager
    async def lifespan(app):
        service.batcher.start()
        yield
        await service.batcher.stop()

    app = FastAPI(title="celeba-heads", version=_version(), lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Facial attributes from a run trained on an embedding cache.")
    app.state.service = service
    bearer = HTTPBearer(auto_error=False)

    def authorised(credentials: HTTPAuthorizationCredentials = Depends(bearer)):
        if access.token is None:
            return
        given = credentials.credentials if credentials else ""
        if not hmac.compare_digest(given.encode(), access.token.encode()):
            raise Refused(401, "missing or wrong bearer token (Authorization: Bearer TOKEN)")

    @app.exception_handler(Refused)
    async def refused(request, exc):
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else \
            {"Retry-After": "1"} if exc.status == 503 else None
        return JSONResponse({"error": str(exc)}, exc.status, headers=headers)

    @app.exception_handler(HTTPException)
    async def http_error(request, exc):
        return JSONResponse({"error": f"{exc.detail}: {request.method} {request.url.path}"}, exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def invalid(request, exc):
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or "request"
        return JSONResponse({"error": f"{where}: {first.get('msg', 'invalid')}"}, 400)

    @app.exception_handler(Exception)
    async def failed(request, exc):
        log.exception("serve: %s %s failed", request.method, request.url.path)
        return JSONResponse({"error": f"internal error: {type(exc).__name__}"}, 500)

    body_doc = {"requestBody": {"required": True, "content": {
        "image/*": {"schema": {"type": "string", "format": "binary"}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        "multipart/form-data": {"schema": {"type": "object", "required": ["image"],
                                           "properties": {"image": {"type": "string", "format": "binary"}}}}}}}

    @app.post("/v1/predict", dependencies=[Depends(authorised)], openapi_extra=body_doc,
              summary="Predict the attributes of a photo's faces (or of the whole image)")
    async def predict(request: Request,
                      faces: Literal["all", "best", "none"] | None = Query(
                          None, description="all: every face; best: the one the run's rule picks; none: the "
                                            "whole image. Default: all for a run on an --align cache, else none."),
                      min_face: int | None = Query(None, ge=12, description="The smallest face searched (px).")):
        known = {"faces", "min_face"}
        unknown = sorted(set(request.query_params) - known)
        if unknown:
            raise Refused(400, f"unknown query parameter {unknown[0]!r}; known: {', '.join(sorted(known))}")
        entry = await service.predict(await photo_bytes(request, limits), faces, min_face)
        return JSONResponse(entry)  # plain JSON types already: no jsonable_encoder pass

    @app.get("/v1/run", dependencies=[Depends(authorised)], summary="What the run is")
    async def run_info():
        return describe_run(predictor)

    page = PAGE.read_text()

    @app.get("/", include_in_schema=False)
    async def index():
        return HTMLResponse(page, headers={"Content-Security-Policy": PAGE_POLICY})

    @app.get("/healthz", summary="200 once the run is loaded")
    async def healthz():
        return {"status": "ok"}

    @app.get("/metrics", summary="Prometheus metrics", include_in_schema=True)
    async def metrics():
        text, kind = service.metrics.text()
        return Response(text, media_type=kind)

    if access.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware
        app.add_middleware(CORSMiddleware, allow_origins=list(access.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])
    app.add_middleware(_Measured, metrics=service.metrics)
    return app


def _version():
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("celeba-heads")
    except PackageNotFoundError:
        return "unknown"


def warm_up(predictor, default_faces):
    """One small photo through the default path, so the first request does not pay for tracing the
    backbone (or loading the detector)."""
    import numpy as np
    from PIL import Image
    buffer = io.BytesIO()
    Image.fromarray(np.full((96, 96, 3), 128, np.uint8)).save(buffer, format="PNG")
    if default_faces == "none":
        predictor.image_entries([("", buffer.getvalue())])
    else:
        predictor.entries([("", np.full((96, 96, 3), 128, np.uint8), "")], "all")


def listening_socket(host, port):
    """A bound, listening TCP socket (port 0: any free port), or UserError naming the address. Made
    with proto IPPROTO_TCP: asyncio sets TCP_NODELAY only on connections of such a socket, and
    without it each answer's body waited for the client's delayed ACK (40 ms a request, measured)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def url_of(sock):
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class GracefulServer(uvicorn.Server):
    """uvicorn's server, but a SIGTERM or the first Ctrl-C only stops it (requests in flight are
    finished) and is not raised again afterwards, so the command exits 0; a second Ctrl-C forces."""

    def handle_exit(self, sig, frame):
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        self.should_exit = True


def serve(run_dir, *, host=SERVE["host"], port=SERVE["port"], token=None, no_auth=False, cors_origins=(),
          limits=Limits(), trust_model=False, on_ready=None):
    """Load the run, listen on host:port, call on_ready(url), and answer until SIGTERM or Ctrl-C,
    which finish the requests in flight and return (exit status 0 for the command)."""
    from heads.serve.predict import Predictor
    check_access(host, token, no_auth)
    sock = listening_socket(host, port)
    predictor = Predictor(run_dir, trust_model=trust_model)
    app = make_app(predictor, limits, Access(token or None, tuple(cors_origins)))
    warm_up(predictor, app.state.service.default_faces)
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on", timeout_keep_alive=5,
                            limit_concurrency=4 * (limits.max_queue + limits.workers * limits.max_batch),
                            timeout_graceful_shutdown=60)
    if on_ready:
        on_ready(url_of(sock))
    GracefulServer(config).run(sockets=[sock])
