"""The online study's web app: HTTP routes over `mcmcp.online.study`, in Starlette.

Participants' pages (`/`, `/api/...`) and the experimenter page (`/experimenter`, behind a token)
are served from `web/` beside this module. `mcmcp.online.study` decides; this module only speaks
HTTP. `app_from_environment` is the factory each uvicorn worker process calls (`python -m
mcmcp.serve` sets the environment).

Nothing from a browser is trusted: request bodies are bounded (413), must be JSON objects with
exactly the expected fields and types (400), carry the session cookie (401) and name the screen
the server has on show for that session (409); a rejected request writes nothing. When the
database cannot keep an answer (`database.Unavailable`) the reply is 503 with a message asking
the participant to wait; the page retries by itself.
Starlette + uvicorn: a small, established ASGI stack (no ORM or form machinery we do not need).
"""

from __future__ import annotations

import hmac
import json
import math
import os
import re
import threading
import time
from importlib import resources

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mcmcp.config import load_config
from mcmcp.online.database import Database, Unavailable
from mcmcp.online.links import FIELDS, link_secret, parse_link, valid_id
from mcmcp.online.screening import client_info
from mcmcp.online.study import OnlineStudy, Rejected
from mcmcp.store import utc_now

MAX_BODY = 4096  # bytes: the largest request a page sends (its `have` list included) is < 2 KiB
MAX_SLIDER_BODY = 65536  # a slider answer carries the handle's path (slider.MAX_MOVES moves)

PAGE_EVENTS = ("fullscreen_exit", "fullscreen_enter")  # what a page may report (study.event)

MAX_SECONDS = 3600.0  # an rt or gap longer than an hour is not a measurement
MAX_HAVE = 64  # image keys a page may say it holds (web/app.js keeps as many decoded)
IMAGE_KEY = re.compile(r"[0-9a-f]{20}")  # study._face_keys

UNAVAILABLE = ("The study cannot save answers just now. Please wait: this page tries again by "
               "itself, and your answers so far are safe.")

ENV_CONFIG, ENV_DB = "MCMCP_SERVE_CONFIG", "MCMCP_SERVE_DB"

ASSETS = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/experimenter": ("experimenter.html", "text/html; charset=utf-8"),
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/static/decoder.js": ("decoder.js", "text/javascript; charset=utf-8"),
    "/static/experimenter.js": ("experimenter.js", "text/javascript; charset=utf-8"),
    "/static/style.css": ("style.css", "text/css; charset=utf-8"),
}


SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "img-src 'self' data:; connect-src 'self'; base-uri 'none'; "
                               "form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


async def _json_body(request: Request, limit: int = MAX_BODY) -> dict:
    """The request's JSON object, read at most `limit` bytes far."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise Rejected(415, "send the body as application/json")
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > limit):
        raise Rejected(413, f"request bodies are at most {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise Rejected(413, f"request bodies are at most {limit} bytes")

    def no_constants(name: str):
        raise ValueError(f"{name} is not a number")

    try:
        data = json.loads(bytes(body), parse_constant=no_constants)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise Rejected(400, "the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise Rejected(400, "the body must be a JSON object")
    return data


def _fields(data: dict, required: set[str], optional: set[str] = frozenset()) -> None:
    missing, unknown = required - set(data), set(data) - required - set(optional)
    if missing or unknown:
        raise Rejected(400, f"fields missing: {sorted(missing)}, not allowed: {sorted(unknown)}; "
                            f"send {sorted(required)} (optional {sorted(optional)})")


def _number(data: dict, name: str, lo: float, hi: float, *, lo_open: bool = False,
            nullable: bool = False) -> float | None:
    value = data.get(name)
    if value is None and nullable:
        return None
    # compared as given: an integer of hundreds of digits has no float (math.isfinite raises)
    ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
          and (isinstance(value, int) or math.isfinite(value))
          and (value > lo if lo_open else value >= lo) and value <= hi)
    if not ok:
        shown = repr(value) if len(repr(value)) <= 40 else f"{repr(value)[:20]}... " \
                                                           f"({len(repr(value))} characters)"
        raise Rejected(400, f"{name} must be a number in {'(' if lo_open else '['}{lo}, {hi}]"
                            f"{' or null' if nullable else ''}, got {shown}")
    return float(value)


def _id(data: dict, name: str) -> str:
    value = data.get(name)
    if not valid_id(value):
        raise Rejected(400, f"{name} must be 1-64 letters, digits, '-' or '_'")
    return value


def _have(data: dict) -> frozenset[str]:
    """The optional `have`: the image keys the page holds decoded, which the reply leaves out
    (a page that claims one it lacks only makes itself ask for the whole state)."""
    have = data.get("have", [])
    if not (isinstance(have, list) and len(have) <= MAX_HAVE
            and all(isinstance(k, str) and IMAGE_KEY.fullmatch(k) for k in have)):
        raise Rejected(400, f"have must be a list of at most {MAX_HAVE} image keys "
                            "(20 hex digits each)")
    return frozenset(have)


def create_app(study: OnlineStudy, experimenter_token: str | None) -> Starlette:
    """The ASGI app serving `study`. experimenter_token None: the experimenter page is closed."""
    cookie = f"mcmcp_{study.cfg.name}"
    slider = study.cfg.paradigm == "gsp"
    assets = {path: (resources.files("mcmcp.online").joinpath("web", name).read_bytes(), media)
              for path, (name, media) in ASSETS.items()}
    per_minute = study.cfg.online.starts_per_minute
    monitor: dict = {}  # the Monitor, made at the first call
    monitor_lock = threading.Lock()
    if experimenter_token is not None:  # the page's numbers import analysis (about 1 s of CPU):
        # now, not at the page's first call, which would hold up every participant on this process
        from mcmcp.online.monitor import Monitor

    def reply(payload: dict, status: int = 200) -> JSONResponse:
        return JSONResponse(payload, status_code=status, headers=SECURITY_HEADERS)

    def handler(fn):
        async def endpoint(request: Request) -> Response:
            began = time.perf_counter()
            try:
                response = await fn(request)
            except Rejected as err:
                response = reply({"error": err.message}, err.status)
            except Unavailable:  # the database logged the cause; nothing was acknowledged
                response = reply({"error": UNAVAILABLE}, 503)
                response.headers["Retry-After"] = "5"
            # the time this process spent on the request (bench_serve reads it)
            response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - began) * 1e3:.1f}"
            return response
        return endpoint

    def asset(path: str):
        body, media = assets[path]

        async def endpoint(request: Request) -> Response:
            return Response(body, media_type=media, headers=SECURITY_HEADERS)
        return endpoint

    async def start(request: Request) -> Response:
        if per_minute is not None and not await run_in_threadpool(
                study.db.allow_start, study.cfg.name,
                request.client.host if request.client else "", per_minute):
            raise Rejected(429, "Too many sessions were started from your network in the last "
                                "minute. Please wait a minute, then reload this page.")
        data = await _json_body(request)
        _fields(data, {"client"}, set(FIELDS))
        try:
            link = parse_link(data)
            client = client_info(data["client"], request.headers.get("user-agent", ""))
        except ValueError as err:
            raise Rejected(400, str(err)) from None
        token, view = await run_in_threadpool(study.start, link, client,
                                              request.cookies.get(cookie))
        response = reply(view)
        if token is not None:
            response.set_cookie(cookie, token, max_age=30 * 86400, httponly=True,
                                samesite="lax", secure=request.url.scheme == "https",
                                path=request.scope.get("root_path") or "/")
        return response

    async def state(request: Request) -> Response:
        return reply(await run_in_threadpool(study.view, request.cookies.get(cookie)))

    async def acknowledge(request: Request) -> Response:
        data = await _json_body(request)
        _fields(data, {"screen"}, {"consent", "have"})
        consent = data.get("consent")
        if consent is not None and not isinstance(consent, bool):
            raise Rejected(400, "consent must be true or false")
        return reply(await run_in_threadpool(study.acknowledge, request.cookies.get(cookie),
                                             _id(data, "screen"), consent, _have(data)))

    async def answer(request: Request) -> Response:
        received = utc_now()
        if slider:  # position and moves are checked against the trial (mcmcp.online.slider)
            data = await _json_body(request, MAX_SLIDER_BODY)
            _fields(data, {"trial", "position", "moves", "rt", "onset", "gap", "device"},
                    {"have"})
            choice, moves = data["position"], data["moves"]
            devices = ("keyboard", "mouse", "touch")
        else:
            data = await _json_body(request)
            _fields(data, {"trial", "side", "rt", "onset", "gap", "device"}, {"have"})
            if data["side"] not in ("left", "right"):
                raise Rejected(400, "side must be 'left' or 'right'")
            choice, moves = data["side"], None
            devices = ("keyboard", "mouse")
        if data["device"] not in devices:
            raise Rejected(400, f"device must be one of {list(devices)}")
        rt = _number(data, "rt", 0.0, MAX_SECONDS, lo_open=True)
        onset = _number(data, "onset", 0.0, 1e8)
        gap = _number(data, "gap", 0.0, MAX_SECONDS, nullable=True)
        return reply(await run_in_threadpool(study.answer, request.cookies.get(cookie),
                                             _id(data, "trial"), choice, rt, onset, gap,
                                             received, data["device"], moves, _have(data)))

    async def event(request: Request) -> Response:
        data = await _json_body(request)
        _fields(data, {"kind"})
        if data["kind"] not in PAGE_EVENTS:
            raise Rejected(400, f"kind must be one of {list(PAGE_EVENTS)}")
        return reply(await run_in_threadpool(study.event, request.cookies.get(cookie),
                                             data["kind"]))

    async def decoder(request: Request) -> Response:
        child = request.query_params.get("child")
        if child is not None and len(child) > 200:
            raise Rejected(400, "child must be a child's id")
        return reply(await run_in_threadpool(study.decoder, request.cookies.get(cookie), child))

    def authorise(request: Request) -> None:
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if experimenter_token is None or not hmac.compare_digest(
                given.encode("utf-8"), experimenter_token.encode("utf-8")):
            raise Rejected(401, "wrong or missing experimenter token")

    async def manage(request: Request) -> Response:
        authorise(request)
        data = await _json_body(request)
        _fields(data, {"uid", "action"})
        if data["action"] not in ("release", "reset", "end"):
            raise Rejected(400, "action must be 'release', 'reset' or 'end'")
        done = await run_in_threadpool(study.manage, _id(data, "uid"), data["action"])
        with monitor_lock:
            monitor.pop("time", None)  # the page shows the change at its next poll
        return reply(done)

    async def experimenter(request: Request) -> Response:
        authorise(request)

        def numbers() -> dict:
            with monitor_lock:  # at most one update every 2 s, however many pages poll
                if "monitor" not in monitor:
                    monitor["monitor"] = Monitor(study.db, study.cfg.name, study.d,
                                                 study.n_shown,
                                                 study.cfg.analysis.precision, study.chains)
                if time.monotonic() - monitor.get("time", -math.inf) > 2.0:
                    monitor.update(time=time.monotonic(), value=monitor["monitor"].summary())
                return monitor["value"]

        return reply(await run_in_threadpool(numbers))

    routes = [Route(path, asset(path), methods=["GET"]) for path in ASSETS]
    routes += [
        Route("/api/start", handler(start), methods=["POST"]),
        Route("/api/state", handler(state), methods=["GET"]),
        Route("/api/ack", handler(acknowledge), methods=["POST"]),
        Route("/api/answer", handler(answer), methods=["POST"]),
        Route("/api/event", handler(event), methods=["POST"]),
        Route("/api/decoder", handler(decoder), methods=["GET"]),
        Route("/api/experimenter", handler(experimenter), methods=["GET"]),
        Route("/api/experimenter/session", handler(manage), methods=["POST"]),
    ]
    return Starlette(routes=routes)


def app_from_environment() -> Starlette:
    """The app for each uvicorn worker process: config and database from the environment
    (set by `main`), model and gates loaded here."""
    import torch

    torch.set_num_threads(1)  # a tiny decoder per request: threads would only contend
    path = os.environ[ENV_CONFIG]
    cfg = load_config(path)
    study = OnlineStudy.open(cfg, Database(os.environ[ENV_DB]), path,
                             link_secret(cfg.online, os.environ, path))
    return create_app(study, os.environ.get(cfg.online.experimenter_token_env) or None)
