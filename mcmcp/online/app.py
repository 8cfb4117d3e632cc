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
from mcmcp.online.limits import StartLimit
from mcmcp.online.study import OnlineStudy, Rejected, valid_id
from mcmcp.store import utc_now

MAX_BODY = 2048  # bytes: the largest request a page sends is well under 1 KiB

MAX_SECONDS = 3600.0  # an rt or gap longer than an hour is not a measurement

UNAVAILABLE = ("The study cannot save answers just now. Please wait: this page tries again by "
               "itself, and your answers so far are safe.")

ENV_CONFIG, ENV_DB = "MCMCP_SERVE_CONFIG", "MCMCP_SERVE_DB"

ASSETS = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/experimenter": ("experimenter.html", "text/html; charset=utf-8"),
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
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


async def _json_body(request: Request) -> dict:
    """The request's JSON object, read at most MAX_BODY bytes far."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise Rejected(415, "send the body as application/json")
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
        raise Rejected(413, f"request bodies are at most {MAX_BODY} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise Rejected(413, f"request bodies are at most {MAX_BODY} bytes")

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


def _client(value: object, user_agent: str) -> dict:
    """What the page measured about the participant's screen, checked and bounded."""
    if not isinstance(value, dict) or set(value) - {"viewport", "dpr", "refresh_hz"}:
        raise Rejected(400, "client must be an object with viewport, dpr and refresh_hz")
    viewport = value.get("viewport")
    if not (isinstance(viewport, list) and len(viewport) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 100_000
            for v in viewport)):
        raise Rejected(400, "client.viewport must be [width, height] in CSS pixels")
    return {"viewport": viewport, "dpr": _number(value, "dpr", 0.0, 20.0, lo_open=True),
            "refresh_hz": _number(value, "refresh_hz", 1.0, 1000.0, nullable=True),
            "user_agent": user_agent[:300]}


def create_app(study: OnlineStudy, experimenter_token: str | None) -> Starlette:
    """The ASGI app serving `study`. experimenter_token None: the experimenter page is closed."""
    cookie = f"mcmcp_{study.cfg.name}"
    assets = {path: (resources.files("mcmcp.online").joinpath("web", name).read_bytes(), media)
              for path, (name, media) in ASSETS.items()}
    per_minute = study.cfg.online.starts_per_minute
    starts = StartLimit(per_minute) if per_minute is not None else None
    monitor: dict = {}  # the Monitor, made at the first call (it imports analysis)
    monitor_lock = threading.Lock()

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
        if starts is not None and not starts.allow(request.client.host if request.client
                                                   else ""):
            raise Rejected(429, "Too many sessions were started from your network in the last "
                                "minute. Please wait a minute, then reload this page.")
        data = await _json_body(request)
        _fields(data, {"client"}, {"PROLIFIC_PID", "STUDY_ID", "SESSION_ID", "participant"})
        pid, named = data.get("PROLIFIC_PID"), data.get("participant")
        if pid is not None and named is not None and pid != named:
            raise Rejected(400, "PROLIFIC_PID and participant differ; the link gives one id")
        participant = pid if pid is not None else named
        if participant is None:
            raise Rejected(400, "This link has no participant id. Please open the study with "
                                "the link you were given.")
        if not isinstance(participant, str):
            raise Rejected(400, "the participant id must be text")
        recruitment = {"study_id": data.get("STUDY_ID"), "session_id": data.get("SESSION_ID")}
        for name, value in recruitment.items():
            if value is not None and not valid_id(value):
                raise Rejected(400, f"{name.upper()} must be 1-64 letters, digits, '-' or '_'")
        client = _client(data["client"], request.headers.get("user-agent", ""))
        token, view = await run_in_threadpool(study.start, participant, recruitment, client,
                                              request.cookies.get(cookie))
        response = reply(view)
        response.set_cookie(cookie, token, max_age=30 * 86400, httponly=True, samesite="lax",
                            secure=request.url.scheme == "https",
                            path=request.scope.get("root_path") or "/")
        return response

    async def state(request: Request) -> Response:
        return reply(await run_in_threadpool(study.view, request.cookies.get(cookie)))

    async def acknowledge(request: Request) -> Response:
        data = await _json_body(request)
        _fields(data, {"screen"}, {"consent"})
        consent = data.get("consent")
        if consent is not None and not isinstance(consent, bool):
            raise Rejected(400, "consent must be true or false")
        return reply(await run_in_threadpool(study.acknowledge, request.cookies.get(cookie),
                                             _id(data, "screen"), consent))

    async def answer(request: Request) -> Response:
        received = utc_now()
        data = await _json_body(request)
        _fields(data, {"trial", "side", "rt", "onset", "gap", "device"})
        if data["side"] not in ("left", "right"):
            raise Rejected(400, "side must be 'left' or 'right'")
        if data["device"] not in ("keyboard", "mouse"):
            raise Rejected(400, "device must be 'keyboard' or 'mouse'")
        rt = _number(data, "rt", 0.0, MAX_SECONDS, lo_open=True)
        onset = _number(data, "onset", 0.0, 1e8)
        gap = _number(data, "gap", 0.0, MAX_SECONDS, nullable=True)
        return reply(await run_in_threadpool(study.answer, request.cookies.get(cookie),
                                             _id(data, "trial"), data["side"], rt, onset, gap,
                                             received, data["device"]))

    async def experimenter(request: Request) -> Response:
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if experimenter_token is None or not hmac.compare_digest(
                given.encode("utf-8"), experimenter_token.encode("utf-8")):
            raise Rejected(401, "wrong or missing experimenter token")

        def numbers() -> dict:
            from mcmcp.online.monitor import Monitor

            with monitor_lock:  # at most one update every 2 s, however many pages poll
                if "monitor" not in monitor:
                    monitor["monitor"] = Monitor(study.db, study.cfg.name, study.d,
                                                 study.n_shown)
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
        Route("/api/experimenter", handler(experimenter), methods=["GET"]),
    ]
    return Starlette(routes=routes)


def app_from_environment() -> Starlette:
    """The app for each uvicorn worker process: config and database from the environment
    (set by `main`), model and gates loaded here."""
    import torch

    torch.set_num_threads(1)  # a tiny decoder per request: threads would only contend
    path = os.environ[ENV_CONFIG]
    cfg = load_config(path)
    study = OnlineStudy.open(cfg, Database(os.environ[ENV_DB]), path)
    return create_app(study, os.environ.get(cfg.online.experimenter_token_env) or None)
