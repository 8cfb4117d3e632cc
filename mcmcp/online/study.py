"""An online study: the session flow of `mcmcp.session`, one browser request at a time.

The browser display of a session. The lab loop (`session.run_session`) blocks on a display; over
HTTP the browser asks and the server answers, so here each request does one step of the same
`SessionFlow` (consent, instructions, practice, blocks, breaks, trials, end) on the same ask/tell
`Engine`, and the state lives in the database (`mcmcp.online.database`), not in the browser or in one
process: a session's flow is rebuilt whenever this process has not got it (a restart, another
server process, a reload), which is the engine's exact resume, from the session's resume point
(`engine.resume_point`, saved with every step), so the cost does not grow with its rows.

The web layer (`mcmcp.serve`) parses and bounds requests; this module decides. Every method
returns a view (the JSON the page renders) or raises `Rejected` (an HTTP status and a message
for the participant) having written nothing. What the browser may say is only: its recruitment
ids (at the start), which screen it acknowledges or which pending trial it answers (by the id
the server issued for it), the side and its own timing. Stimuli are the renderer's decoded
images as PNG data URLs; a trial's view carries the next pair too, so the page can decode it
while the participant looks at the current one.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import secrets
import sys
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace

import numpy as np
from PIL import Image

from mcmcp.config import ConfigError, config_to_dict
from mcmcp.engine import Engine, resume_point, schedule_length
from mcmcp.identities import Identities, assignment
from mcmcp.materials import open_model
from mcmcp.online.database import Database, SessionRecord
from mcmcp.online.limits import IN_PROGRESS, cutoffs, expired
from mcmcp.render import Renderer
from mcmcp.session import SessionFlow, instructions
from mcmcp.specs import ExperimentConfig
from mcmcp.store import local_now, utc_now, validate_participant_id, versions

SESSION = 1  # one session per participant and study online
END_TEXT = "Thank you! The study is over."
DECLINED_TEXT = ("You chose not to take part, so no data were recorded.\n\nThank you for your "
                 "time. If you came from a recruitment site, please return your submission there; "
                 "you can close this page.")
ENDED_TEXT = ("This session has ended: it was left for too long or reached its time limit. "
              "Your answers so far are kept. If you came from a recruitment site, please "
              "return there.")
FULL_TEXT = ("The study has as many participants as it can take at the moment. Please try "
             "again in a few minutes.")
FLOW_CACHE = 512  # flows kept in memory per server process (others: from their resume point)
_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


class Rejected(Exception):
    """A request that changes nothing: HTTP `status` and a message a participant can read."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def valid_id(value: object, max_len: int = 64) -> bool:
    """True for 1..max_len letters, digits, '-' or '_' (tokens, screen ids, recruitment ids)."""
    return isinstance(value, str) and 1 <= len(value) <= max_len and set(value) <= _ID_CHARS


class _SharedRenderer(Renderer):
    """The renderer shared by the request threads of one process (its cache is not thread-safe)."""

    def __init__(self, model, cache_size: int = 1024, identities=None):
        super().__init__(model, cache_size, identities)
        self._lock = threading.Lock()

    def images(self, codes: np.ndarray, identities=None) -> np.ndarray:
        with self._lock:
            return super().images(codes, identities)


class OnlineStudy:
    """One experiment config served online; several processes may serve it on one database.

    cfg: the experiment (its `agent` is ignored: online participants are people); db: the
    store; loaded: the checkpoint (`config.open_model`); gates, centroids, faces_hash,
    identities (the children, `mcmcp.identities`; None: the default child): as `mcmcp.run`
    builds them for a lab session.
    """

    def __init__(self, cfg: ExperimentConfig, db: Database, loaded, gates: dict,
                 centroids: dict | None, faces_hash: str | None,
                 identities: Identities | None = None):
        self.cfg, self.db, self.loaded = cfg, db, loaded
        self.gates, self.centroids, self.faces_hash = gates, centroids, faces_hash
        self.identities = identities or Identities(loaded.default_identity)
        self.d = loaded.config.latent_dim
        self.renderer = _SharedRenderer(loaded.model, identities=identities)
        self.n_shown = schedule_length(cfg)
        # session id -> (screen on show, its flow, the resume point of its saved rows)
        self._flows: OrderedDict[int, tuple[str, SessionFlow, dict]] = OrderedDict()
        self._flows_lock = threading.Lock()
        self._locks = [threading.Lock() for _ in range(64)]  # per session, striped
        spec = cfg.display
        self.display = {"face_size": spec.face_size, "face_offset": spec.face_offset,
                        "fixation": spec.fixation, "mouse": spec.mouse,
                        "keys": {"left": browser_key(spec.keys.left),
                                 "right": browser_key(spec.keys.right)}}
        self._pngs: OrderedDict[str, str] = OrderedDict()
        self._pngs_lock = threading.Lock()

    @classmethod
    def open(cls, cfg: ExperimentConfig, db: Database, file: str = "<config>") -> OnlineStudy:
        """Load the model and the gates for `cfg` and check the database can serve it.

        Raises ConfigError when `online.consent` is missing, or when sessions of this study
        that are not finished were started with another config or checkpoint (their chains
        could not go on exactly).
        """
        from mcmcp.materials import (
            checkpoint_fitness,
            session_materials,  # the lab's own set-up: both fit the same gates
        )

        if cfg.paradigm != "mcmcp":
            raise ConfigError(file, "paradigm", cfg.paradigm,
                              "mcmcp online (the browser shows two faces; GSP sliders run in "
                              "the lab with `python -m mcmcp.run`)")
        if cfg.online.consent is None:
            raise ConfigError(file, "online.consent", None,
                              "the consent text participants agree to before the study; an "
                              "online study needs one (see experiments/demo.yaml)")
        cfg = replace(cfg, agent=None)
        loaded = open_model(cfg, file)
        warnings = checkpoint_fitness(loaded, file)
        gates, centroids, _, faces_hash, more, identities = session_materials(cfg, loaded, file)
        for line in [*warnings, *more]:
            print(f"WARNING: {line}", file=sys.stderr, flush=True)
        db.abandon_expired(cfg.name, *cutoffs(cfg.online))  # they block no changed design
        check_database(cfg, db, loaded.sha256, file)
        return cls(cfg, db, loaded, gates, centroids, faces_hash, identities)

    # ------------------------------------------------------------------ participant steps

    def start(self, participant: str, recruitment: dict, client: dict, token: str | None
              ) -> tuple[str, dict]:
        """A participant arrives (or comes back): their (token, view).

        participant: the id from the link (validated here); recruitment: the recruitment
        service's ids (study_id, session_id); client: what the page measured about the screen;
        token: the session cookie, if the browser has one. A participant who already has a
        session gets it back only with its token: a second browser gets 409.
        """
        try:
            validate_participant_id(participant)
        except ValueError as err:
            raise Rejected(400, str(err)) from None
        existing = self._ended(self.db.by_participant(self.cfg.name, participant, SESSION))
        if existing is not None:
            mine = token is not None and valid_id(token) and self.db.by_token(token)
            if mine and mine.id == existing.id:
                return token, self.view(token)
            if existing.status == "complete":
                raise Rejected(409, "You have already completed this study. Thank you!")
            raise Rejected(409, "This study was already started for your participant id in "
                                "another browser or window. Please go on there; a second "
                                "session cannot be started.")
        limit = self.cfg.online.max_in_progress
        if limit is not None:
            self.db.abandon_expired(self.cfg.name, *cutoffs(self.cfg.online))
            if self.db.in_progress(self.cfg.name) >= limit:
                raise Rejected(503, FULL_TEXT)
        try:  # the participant's streams, block order and child (rotated ones need a number)
            children = assignment(self.cfg, participant, self.identities.default)
            engine = Engine(self.cfg, self.d, participant, SESSION, self.gates, self.centroids,
                            identities=children)
        except ValueError as err:
            raise Rejected(400, str(err)) from None
        token, now, uid = secrets.token_urlsafe(24), utc_now(), uuid.uuid4().hex
        meta = {
            "config": config_to_dict(self.cfg),
            "checkpoint_sha256": self.loaded.sha256,
            "faces_sha256": self.faces_hash,
            "versions": versions(),
            "seeds": engine.seeds(),
            "block_order": list(engine.emotions),
            "identity": {**children.record(), **self.identities.record()},
            "date": local_now(),
            "agent": "human",
            "gate": config_to_dict(self.cfg)["gate"],
            "window": "browser",
            "participant": participant,
            "session": SESSION,
            "d": self.d,
            "start_time": now,
            "online": {"uid": uid, **recruitment, "client": client},
        }
        record = self.db.create(uid=uid, study=self.cfg.name, participant=participant,
                                session=SESSION, token=token, d=self.d,
                                screen=secrets.token_urlsafe(12), meta=meta, now=now,
                                resume=resume_point([], self.d))
        if record is None:  # another browser of the same participant won the race
            raise Rejected(409, "This study was already started for your participant id in "
                                "another browser or window. Please go on there.")
        return token, self.view(token)

    def view(self, token: str) -> dict:
        """What the participant should see now (after a reload: exactly where they were)."""
        record = self._record(token)
        with self._lock(record.id):
            record = self._record(token)
            if record.status == "declined":
                return self._declined(record.screen)
            flow, _ = self._flow(record)
            return self._render(record, flow)

    def acknowledge(self, token: str, screen: str, consent: bool | None) -> dict:
        """The participant has read the message screen `screen` (consent: agreed or not)."""

        def step(flow: SessionFlow, record: SessionRecord):
            kind = flow.screen().kind
            if kind in ("trial", "end"):
                raise Rejected(409, "There is no message on show to continue from; "
                                    "the page reloads to where you are.")
            if (kind == "consent") != (consent is not None):
                raise Rejected(400, "consent (true or false) answers the consent page, and "
                                    "only that page")
            meta = None
            if kind == "consent":
                meta = {**record.meta, "online": {**record.meta["online"],
                                                  "consent": bool(consent),
                                                  "consent_time": utc_now()}}
                if not consent:
                    return [], "declined", meta, record.acked
            flow.acknowledge()
            return [], "running", meta, record.acked + 1

        return self._step(token, screen, step)

    def answer(self, token: str, trial: str, side: str, rt: float, onset: float,
               gap: float | None, received: str, device: str) -> dict:
        """The participant chose `side` on the pending trial `trial` (its screen id).

        rt: seconds from onset (the page's clock); onset: seconds on the page's clock
        (performance.now, restarts at a reload); gap: seconds from the previous response to this
        onset on the same page without a message between (else None); received: when the server
        received the answer (UTC ISO), saved as the row's timestamp; device: keyboard | mouse (the
        key saved is the config's key for the side, so the page never names one).
        """
        keys = self.cfg.display.keys
        key = (keys.left if side == "left" else keys.right) if device == "keyboard" else None

        def step(flow: SessionFlow, record: SessionRecord):
            if flow.screen().kind != "trial":
                raise Rejected(409, "There is no trial on show to answer; "
                                    "the page reloads to where you are.")
            rows = flow.tell(side, rt, onset, gap, None, received, key, device)
            if flow.screen().kind == "end":
                meta = {**record.meta, "end_time": received}
                return rows, "complete", meta, 0
            return rows, "running", None, 0

        return self._step(token, trial, step)

    # ------------------------------------------------------------------ machinery

    def _record(self, token: str | None) -> SessionRecord:
        record = self.db.by_token(token) if token is not None and valid_id(token) else None
        if record is None:
            raise Rejected(401, "This page has no valid session. Open the study with the link "
                                "you were given (it starts or resumes your session).")
        return self._ended(record)

    def _ended(self, record: SessionRecord | None) -> SessionRecord | None:
        """`record`, unless its session has ended by the limits (Rejected 410); a session in
        progress that has just expired is marked abandoned first."""
        if record is None:
            return None
        if record.status in IN_PROGRESS and expired(self.cfg.online, record.created,
                                                    record.updated):
            self.db.abandon_expired(self.cfg.name, *cutoffs(self.cfg.online))
            record = replace(record, status="abandoned")
        if record.status == "abandoned":
            raise Rejected(410, ENDED_TEXT)
        return record

    def _lock(self, session_id: int) -> threading.Lock:
        return self._locks[session_id % len(self._locks)]

    def _step(self, token: str, screen: str, step: Callable) -> dict:
        """Run one step on the session's flow and save it in one transaction, or nothing."""
        record = self._record(token)
        with self._lock(record.id):
            record = self._record(token)
            if not valid_id(screen) or screen != record.screen:
                raise Rejected(409, "That screen is no longer on show (it was already answered, "
                                    "or answered in another window); the page reloads to where "
                                    "you are.")
            if record.status in ("declined", "complete"):
                raise Rejected(409, "This session is over.")
            flow, point = self._flow(record)
            with self._flows_lock:
                self._flows.pop(record.id, None)  # mutated below: cached again only if saved
            rows, status, meta, acked = step(flow, record)
            if rows:
                point = resume_point(rows, record.d, point)
            new_screen = secrets.token_urlsafe(12)
            if not self.db.advance(record, new_screen, now=utc_now(), acked=acked, rows=rows,
                                   status=status, meta=meta, resume=point if rows else None):
                raise Rejected(409, "That screen was answered in another window; the page "
                                    "reloads to where you are.")
            record = replace(record, screen=new_screen, acked=acked, status=status,
                             n_rows=record.n_rows + len(rows), meta=meta or record.meta)
            self._keep(record.id, new_screen, flow, point)
            if status == "declined":
                return self._declined(new_screen)
            return self._render(record, flow)

    def _declined(self, screen: str) -> dict:
        return {"screen": {"id": screen, "kind": "declined", "text": DECLINED_TEXT},
                "images": {}, "next": None, "display": self.display}

    def _flow(self, record: SessionRecord) -> tuple[SessionFlow, dict]:
        """The session's flow and resume point: from this process's cache, else rebuilt from
        the saved resume point (the rows, in a database made before there were any)."""
        with self._flows_lock:
            cached = self._flows.get(record.id)
            if cached is not None and cached[0] == record.screen:
                self._flows.move_to_end(record.id)
                return cached[1], cached[2]
        point = self.db.resume(record.id)
        if point is None:
            point = resume_point(self.db.rows(record.id, record.d), record.d)
        engine = Engine(self.cfg, self.d, record.participant, record.session, self.gates,
                        self.centroids, "human",
                        identities=assignment(self.cfg, record.participant,
                                              self.identities.default),
                        resume=point, lookup=lambda row: self.db.codes(record.id, row))
        engine.stamp(run=1, date=record.meta.get("date"),
                     frame_rate=record.meta["online"]["client"].get("refresh_hz"))
        intro = ([("consent", self.cfg.online.consent), ("instructions", instructions(self.cfg))]
                 if record.n_rows == 0 else [])
        flow = SessionFlow(self.cfg, engine, self.renderer, intro, END_TEXT, record.acked)
        self._keep(record.id, record.screen, flow, point)
        return flow, point

    def _keep(self, session_id: int, screen: str, flow: SessionFlow, point: dict) -> None:
        with self._flows_lock:
            self._flows[session_id] = (screen, flow, point)
            self._flows.move_to_end(session_id)
            while len(self._flows) > FLOW_CACHE:
                self._flows.popitem(last=False)

    def _render(self, record: SessionRecord, flow: SessionFlow) -> dict:
        """The view of the flow's current screen: text or trial, plus the pair to preload."""
        screen = flow.screen()
        images: dict[str, str] = {}
        view: dict = {"screen": {"id": record.screen, "kind": screen.kind, "text": screen.text},
                      "images": images, "next": None, "display": self.display}
        if screen.kind == "trial":
            flow.prepare()
            view["screen"].update(prompt=screen.prompt, progress=screen.progress,
                                  images=self._pair(screen.trial, screen.images, images))
            upcoming = flow.upcoming()
            if upcoming is not None and upcoming[0] is not None:
                view["next"] = self._pair(*upcoming, images)
        elif screen.kind == "end":
            view["end"] = {"code": self.cfg.online.completion_code,
                           "redirect": self.cfg.online.redirect_url}
        elif flow.pending is not None:
            view["next"] = self._pair(flow.pending, flow.images, images)
        return view

    def _pair(self, trial, pair: np.ndarray, out: dict[str, str]) -> list[str]:
        """Image keys [left, right] of a trial (the code and the child); their PNG data URLs
        go into `out`."""
        keys = []
        for code, image in zip((trial.left, trial.right), pair, strict=True):
            key = hashlib.sha256(np.asarray(code, dtype=np.float64).tobytes()
                                 + trial.identity.encode("utf-8")).hexdigest()[:20]
            with self._pngs_lock:
                url = self._pngs.get(key)
            if url is None:
                url = png_data_url(image)
                with self._pngs_lock:
                    self._pngs[key] = url
                    while len(self._pngs) > 4096:
                        self._pngs.popitem(last=False)
            out[key] = url
            keys.append(key)
        return keys


def browser_key(name: str) -> str:
    """A PsychoPy key name (the YAML's display.keys) as the browser's KeyboardEvent.key."""
    return {"left": "ArrowLeft", "right": "ArrowRight", "up": "ArrowUp", "down": "ArrowDown",
            "space": " "}.get(name, name.lower() if len(name) == 1 else name)


def check_database(cfg: ExperimentConfig, db: Database, checkpoint_sha256: str,
                   file: str = "<config>") -> None:
    """Raise ConfigError if unfinished sessions of `cfg`'s study in `db` were started with
    another config (apart from its `online` texts) or another checkpoint: their chains could
    not go on exactly."""

    def deciding(config: dict) -> dict:
        return {k: v for k, v in config.items() if k not in ("online", "agent")}

    mine = deciding(json.loads(json.dumps(config_to_dict(cfg))))
    for study, status, meta in db.studies():
        if study != cfg.name or status not in ("consent", "running"):
            continue
        theirs = deciding(_resolved(meta.get("config", {})))
        if theirs != mine or meta.get("checkpoint_sha256") != checkpoint_sha256:
            keys = sorted(k for k in {*mine, *theirs} if mine.get(k) != theirs.get(k))
            raise ConfigError(
                file, "name", cfg.name,
                f"a study name whose unfinished sessions in {db.url} used this config; they "
                f"differ in {keys or ['model.checkpoint (its sha256)']}. Serve them with the "
                "config they started with, or give this config another name")


def _resolved(config: dict) -> dict:
    """A saved config with the keys added since it was saved (their defaults, e.g. `stimuli`),
    so a session started before a key existed still compares equal to the same design."""
    from mcmcp.config import config_from_dict

    try:
        return json.loads(json.dumps(config_to_dict(config_from_dict(
            config, require_checkpoint=False))))
    except (ConfigError, TypeError):  # not a valid config today: fill in the missing sections
        defaults = json.loads(json.dumps(config_to_dict(ExperimentConfig(name="_"))))
        return {**defaults, **config}


def png_data_url(image: np.ndarray) -> str:
    """A (H, W) float image in [0, 1] as an 8-bit grayscale PNG data URL."""
    buf = io.BytesIO()
    pixels = np.clip(np.rint(np.asarray(image, dtype=np.float64) * 255.0), 0, 255)
    Image.fromarray(pixels.astype(np.uint8)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
