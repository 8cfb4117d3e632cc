"""An online study: the session flow of `mcmcp.session`, one browser request at a time.

The browser display of a session. The lab loop (`session.run_session`) blocks on a display; over
HTTP the browser asks and the server answers, so here each request does one step of the same
`SessionFlow` (consent, instructions, practice, blocks, breaks, trials, end) on the same ask/tell
`Engine`, and the state lives in the database (`mcmcp.online.database`), not in the browser or in one
process: a session's flow is rebuilt whenever this process has not got it (a restart, another
server process, a reload), which is the engine's exact resume, from the session's resume point
(`engine.resume_point`, saved with every step, with the trials drawn and not yet answered), so
the cost does not grow with its rows and the trials on show and next are not drawn again.

The web layer (`mcmcp.online.app`) parses and bounds requests; this module decides. Every method
returns a view (the JSON the page renders) or raises `Rejected` (an HTTP status and a message
for the participant) having written nothing. What the browser may say is only: its link's ids
and what it measured about the device (at the start; `mcmcp.online.links`,
`mcmcp.online.screening`), which screen it acknowledges or which pending trial it answers (by
the id the server issued for it), the side (a GSP slider: the position and the handle's path,
`mcmcp.online.slider`), its own timing, that it left or went back to full screen, and which
faces it holds (`have`). Stimuli are the renderer's decoded images as PNG data URLs (with
`online.faces: browser`, each face's child and code, which the page decodes itself:
`mcmcp.online.faces`), named by image keys (a hash of the code and the child); a trial's
view names the faces of the trial on show and of the next one (a pair, or a slider's K), so
the page can decode them while the participant looks at the current one, and sends only
those the page has not got: not the ones the view before sent, nor those its answer names in
`have` (the page keeps the 64 latest). In MCMCP a chain's current face was shown before, so an
answer brings one new face, and only that one is decoded, whichever process answers (a page
that claimed one it lacks asks for the whole state, which sends them all). The experimenter
may release, reset or end a session (`manage`).

Shared chains (config `chains.across_participants`): the session's chains come from the study's
chain store (`mcmcp.shared.SharedChains` over `mcmcp.chainstore.ChainStore`) in the online
database itself, so an answer's chain step (compare-and-set on its lease and version) and the
session's rows commit in one transaction, or neither does. When no chain of the next trial's
emotion is free, the page shows a `wait` screen and asks again (`view`) until one is. An answer
whose lease ran out is kept in the store's audit table and as the session's `late` row, never in
a chain; its reply is 409 (`LATE_TEXT`) and the page reloads the session, which has leased afresh.
Sessions that end unfinished (abandoned, ended or reset) hand their chains back.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import struct
import sys
import threading
import time
import uuid
import zlib
from collections import OrderedDict
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import replace

import numpy as np

from mcmcp.chainstore import ChainStore
from mcmcp.config import ConfigError, config_to_dict
from mcmcp.engine import Engine, resume_point, schedule_length
from mcmcp.identities import Identities, assignment
from mcmcp.materials import open_model
from mcmcp.online.database import Database, SessionRecord
from mcmcp.online.faces import browser_decodable, child_bundle, decoder_bundle
from mcmcp.online.limits import IN_PROGRESS, cutoffs, expired
from mcmcp.online.links import Link, same_submission, signed, valid_id
from mcmcp.online.screening import screen_out, too_small
from mcmcp.online.slider import CONFIRM_KEY, slider_answer, slider_view
from mcmcp.render import Renderer
from mcmcp.sampling.gsp import slider_to_point
from mcmcp.session import SessionFlow, instructions
from mcmcp.shared import SharedChains
from mcmcp.specs import ExperimentConfig
from mcmcp.store import local_now, utc_now, versions

SESSION = 1  # a participant's first session (after a reset, the next number)
END_TEXT = "Thank you! The study is over."
FINAL_TEXT = {
    "declined": "You chose not to take part, so no data were recorded.\n\nThank you for your "
                "time. If you came from a recruitment site, please return your submission "
                "there; you can close this page.",
    "ended": "The experimenter has ended this session. Thank you for your time; you can close "
             "this page.",
    "reset": "The experimenter has reset this session. Open the study again with your link to "
             "start afresh.",
    "full": "This study is full: it has all the answers it needs, so there is nothing left "
            "to do and no data were recorded.\n\nThank you for your interest. If you came from "
            "a recruitment site, please return your submission there; you can close this page.",
}
GONE_TEXT = {  # a new browser opening the link of a session that is over
    "complete": "You have already completed this study. Thank you!",
    "ended": "The experimenter has ended your session of this study; it cannot go on. Thank "
             "you for your time.",
    "declined": "You chose not to take part in this study, so nothing was recorded. If that "
                "was a mistake, please contact the experimenter.",
}
MAX_EVENTS = 1000  # events a page may record per session (full-screen exits, ...)
OVER = ("declined", "complete", "ended", "reset")  # statuses that take no more steps
ENDED_TEXT = ("This session has ended: it was left for too long or reached its time limit. "
              "Your answers so far are kept. If you came from a recruitment site, please "
              "return there.")
FULL_TEXT = ("The study has as many participants as it can take at the moment. Please try "
             "again in a few minutes.")
WAIT_TEXT = ("Please wait: the next face is being prepared. This page goes on by itself in a "
             "few seconds.")
WAIT_SECONDS = 2.0  # how often a waiting page asks again
LATE_TEXT = ("Your answer came after the time for that face was up, so the study moved on "
             "without it (it is kept, but not used). Here is your next face.")
FLOW_CACHE = 512  # flows kept in memory per server process (others: from their resume point)
PNG_CACHE = 4096  # faces kept as PNG data URLs per server process (about 3 KB each)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_UP = 2  # the filter type byte of a row stored as its difference to the row above


class Rejected(Exception):
    """A request that changes nothing: HTTP `status` and a message a participant can read."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class _SharedRenderer(Renderer):
    """The renderer shared by the request threads of one process: one thread decodes at a
    time, each face alone with the model's `FrozenDecoder` (a batch of faces would cost as much
    per face)."""

    def __init__(self, model, cache_size: int = 1024, identities=None):
        super().__init__(model, cache_size, identities, frozen=True)
        self._decoding = threading.Lock()
        # every child's decoder traced now (a few tenths of a second each), not at its first
        # face, which would hold up the faces of every participant on this process
        self._decode.prepare(identities.stack(list(identities.codes))
                             if identities is not None and identities.codes else None)

    def images(self, codes: np.ndarray, identities=None) -> np.ndarray:
        with self._decoding:
            return super().images(codes, identities)


class _Undecoded:
    """The renderer an online `SessionFlow` gets: it decodes nothing. `OnlineStudy._faces`
    decodes only the faces the page has not got (most answers: the one new proposal), so a
    flow rebuilt in another process costs no decoding."""

    @staticmethod
    def trial(trial) -> None:
        return None


class OnlineStudy:
    """One experiment config served online; several processes may serve it on one database.

    cfg: the experiment (its `agent` is ignored: online participants are people); db: the
    store; loaded: the checkpoint (`config.open_model`); gates, centroids, faces_hash,
    identities (the children, `mcmcp.identities`; None: the default child): as `mcmcp.run`
    builds them for a lab session; link_secret: the key of signed lab links
    (`mcmcp.online.links.link_secret`).
    """

    def __init__(self, cfg: ExperimentConfig, db: Database, loaded, gates: dict,
                 centroids: dict | None, faces_hash: str | None,
                 identities: Identities | None = None, link_secret: str | None = None):
        self.cfg, self.db, self.loaded = cfg, db, loaded
        self.link_secret = link_secret
        self.gates, self.centroids, self.faces_hash = gates, centroids, faces_hash
        self.identities = identities or Identities(loaded.default_identity)
        self.d = loaded.config.latent_dim
        # the server decodes the faces, or the page does (then it fetches `decoder`'s bundles)
        self.browser_faces = cfg.online.faces == "browser"
        self.renderer = (None if self.browser_faces else
                         _SharedRenderer(loaded.model, identities=identities))
        self._bundles: dict[str | None, dict] = {}  # None: the decoder's; a child id: its own
        self._bundles_lock = threading.Lock()
        self.n_shown = schedule_length(cfg)
        # what every session's meta records of the packages: those this process runs, read
        # once (reading the installed packages' metadata cost half of a session's start)
        self.versions = versions()
        # session id -> (screen on show, its flow, the resume point of its saved rows)
        self._flows: OrderedDict[int, tuple[str, SessionFlow, dict]] = OrderedDict()
        self._flows_lock = threading.Lock()
        self._locks = [threading.Lock() for _ in range(64)]  # per session, striped
        spec = cfg.display
        self.display = {"face_size": spec.face_size, "face_offset": spec.face_offset,
                        "fixation": spec.fixation, "mouse": spec.mouse,
                        "min_window": cfg.online.min_window, "fullscreen": cfg.online.fullscreen,
                        "keys": {"left": browser_key(spec.keys.left),
                                 "right": browser_key(spec.keys.right)}}
        self._ids: OrderedDict[str, int] = OrderedDict()  # token -> its session's id (`_session`)
        self._pngs: OrderedDict[str, str] = OrderedDict()
        self._pngs_lock = threading.Lock()
        # shared chains: the study's chain store, in the online database itself
        self.chains = ChainStore.on(db.engine) if cfg.chains.across_participants else None

    @classmethod
    def open(cls, cfg: ExperimentConfig, db: Database, file: str = "<config>",
             link_secret: str | None = None) -> OnlineStudy:
        """Load the model and the gates for `cfg` and check the database can serve it.

        Raises ConfigError when `online.consent` is missing, or when sessions of this study
        that are not finished were started with another config or checkpoint (their chains
        could not go on exactly).
        """
        from mcmcp.materials import (
            checkpoint_fitness,
            session_materials,  # the lab's own set-up: both fit the same gates
        )

        if cfg.online.consent is None:
            raise ConfigError(file, "online.consent", None,
                              "the consent text participants agree to before the study; an "
                              "online study needs one (see experiments/demo.yaml)")
        cfg = replace(cfg, agent=None)
        loaded = open_model(cfg, file)
        why = browser_decodable(loaded.model) if cfg.online.faces == "browser" else None
        if why is not None:
            raise ConfigError(file, "online.faces", "browser",
                              f"'server' for {cfg.model.checkpoint}: {why}")
        warnings = checkpoint_fitness(loaded, file)
        gates, centroids, _, faces_hash, more, identities = session_materials(cfg, loaded, file)
        for line in [*warnings, *more]:
            print(f"WARNING: {line}", file=sys.stderr, flush=True)
        db.abandon_expired(cfg.name, *cutoffs(cfg.online))  # they block no changed design
        check_database(cfg, db, loaded.sha256, file)
        study = cls(cfg, db, loaded, gates, centroids, faces_hash, identities, link_secret)
        study._abandon(release=True)  # and hold no chains
        return study

    # ------------------------------------------------------------------ participant steps

    def start(self, link: Link, client: dict, token: str | None) -> tuple[str | None, dict]:
        """A participant arrives (or comes back): (their token, the view); the token is None
        when no session was made (screened out, window too small).

        link: who the study link says they are (`mcmcp.online.links`); client: what the page
        measured (`mcmcp.online.screening.client_info`); token: the session cookie, if the
        browser has one. A participant who already has a session gets it back with its token,
        or in a new browser when the link proves who they are (the same recruitment submission,
        a signed lab link) or the experimenter released it; otherwise 409.
        """
        spec = self.cfg.online
        reason = screen_out(spec, client)
        if reason is not None:
            return None, self._final("screened_out", "screened_out", reason)
        ask = too_small(spec, client)
        if ask is not None:
            return None, {"screen": {"id": "resize", "kind": "resize", "text": ask},
                          "images": {}, "next": None, "display": self.display}
        if spec.participant_links == "signed" and not signed(link, self.link_secret,
                                                             self.cfg.name):
            raise Rejected(403, "This link is not valid for this study. Please open the study "
                                "with the exact link you were given.")
        if spec.participant_links == "recruitment" and not link.recruited:
            raise Rejected(403, "This study is open through its recruitment site only. Please "
                                "open it from there, with the link the site gives you.")
        existing = self._ended(self.db.latest(self.cfg.name, link.participant))
        if existing is not None and existing.status != "reset":
            mine = token is not None and valid_id(token) and self.db.by_token(token)
            if mine and mine.id == existing.id:
                return token, self.view(token)
            how = self._proof(link, existing)
            if how is not None:
                new = secrets.token_urlsafe(24)
                if not self.db.rebind(existing, new, now=utc_now(), event="resumed",
                                      detail={"by": how, "client": client}):
                    raise Rejected(409, "Your session moved on in another window just now; "
                                        "please reload this page.")
                return new, self.view(new)
            if existing.status in GONE_TEXT:
                raise Rejected(409, GONE_TEXT[existing.status])
            raise Rejected(409, "This study was already started for your participant id in "
                                "another browser or window. Please go on there; a second "
                                "session cannot be started.")
        if self.chains is not None and self.chains.unfinished(self.cfg.name) == set():
            return None, self._final("full", "full")  # no session, no lease
        limit = self.cfg.online.max_in_progress
        if limit is not None or self.chains is not None:  # shared: free the chains they held
            self._abandon()
        if limit is not None and self.db.in_progress(self.cfg.name) >= limit:
            raise Rejected(503, FULL_TEXT)
        number = SESSION if existing is None else existing.session + 1  # after a reset
        participant = link.participant
        try:  # the participant's streams, block order and child (rotated ones need a number)
            children = assignment(self.cfg, participant, self.identities.default)
            engine = Engine(self.cfg, self.d, participant, number, self.gates, self.centroids,
                            identities=children, source=self._source(participant, number))
        except ValueError as err:
            raise Rejected(400, str(err)) from None
        token, now, uid = secrets.token_urlsafe(24), utc_now(), uuid.uuid4().hex
        meta = {
            "config": config_to_dict(self.cfg),
            "checkpoint_sha256": self.loaded.sha256,
            "faces_sha256": self.faces_hash,
            "versions": dict(self.versions),
            "seeds": engine.seeds(),
            "block_order": list(engine.emotions),
            "identity": {**children.record(), **self.identities.record()},
            "date": local_now(),
            "agent": "human",
            "gate": config_to_dict(self.cfg)["gate"],
            "window": "browser",
            "participant": participant,
            "session": number,
            "d": self.d,
            "start_time": now,
            "online": {"uid": uid, "study_id": link.study_id, "session_id": link.session_id,
                       "link": "recruitment" if link.recruited
                       else "signed" if signed(link, self.link_secret, self.cfg.name)
                       else "open",
                       "client": client},
        }
        record = self.db.create(uid=uid, study=self.cfg.name, participant=participant,
                                session=number, token=token, d=self.d,
                                screen=secrets.token_urlsafe(12), meta=meta, now=now,
                                resume=resume_point([], self.d))
        if record is None:  # another browser of the same participant won the race
            raise Rejected(409, "This study was already started for your participant id in "
                                "another browser or window. Please go on there.")
        return token, self.view(token)

    def _proof(self, link: Link, record: SessionRecord) -> str | None:
        """How `link` may take `record` over in a new browser (None: it may not)."""
        if signed(link, self.link_secret, self.cfg.name):
            return "signed link"
        if same_submission(link, record.meta["online"]):
            return "recruitment ids"
        events = self.db.events(record.id)
        if events and events[-1]["kind"] == "released":
            return "released by the experimenter"
        return None

    def view(self, token: str) -> dict:
        """What the participant should see now (after a reload: exactly where they were)."""
        with self._lock(token):
            record, point = self._session(token)
            if record.status in ("declined", "ended", "reset"):
                return self._final(record.status, record.screen)
            flow, point = self._flow(record, point)
            flow.retry()  # a wait screen: is a chain free now, or is the study full?
            if record.status == "running" and flow.screen().kind == "end":
                record = self._complete(record, flow, point)
            return self._render(record, flow)

    def _complete(self, record: SessionRecord, flow: SessionFlow, point: dict
                  ) -> SessionRecord:
        """Shared chains: a waiting session whose remaining trials were all skipped (every
        chain of their emotions is complete) ends as complete, with no answer to end it."""
        new_screen, now = secrets.token_urlsafe(12), utc_now()
        meta = {**record.meta, "end_time": now}
        if not self.db.advance(record, new_screen, now=now, acked=0, status="complete",
                               meta=meta):
            raise Rejected(409, "Your session moved on in another window just now; please "
                                "reload this page.")
        self._keep(record.id, new_screen, flow, point)
        return replace(record, screen=new_screen, acked=0, status="complete", meta=meta)

    def acknowledge(self, token: str, screen: str, consent: bool | None,
                    have: frozenset[str] = frozenset()) -> dict:
        """The participant has read the message screen `screen` (consent: agreed or not);
        have: the image keys the page holds decoded (left out of the view)."""

        def step(flow: SessionFlow, record: SessionRecord):
            kind = flow.screen().kind
            if kind in ("trial", "end", "wait"):
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

        return self._step(token, screen, step, have)

    def answer(self, token: str, trial: str, side: str | int, rt: float, onset: float,
               gap: float | None, received: str, device: str,
               moves: list[list[float]] | None = None,
               have: frozenset[str] = frozenset()) -> dict:
        """The participant chose `side` on the pending trial `trial` (its screen id); on a GSP
        slider trial `side` is the slider position (0 = left end) confirmed.

        rt: seconds from onset (the page's clock); onset: seconds on the page's clock
        (performance.now, restarts at a reload); gap: seconds from the previous response to this
        onset on the same page without a message between (else None); received: when the server
        received the answer (UTC ISO), saved as the row's timestamp; device: keyboard | mouse |
        touch (the key saved is the config's key for the side, or SPACE confirming a slider, so
        the page never names one); moves: a slider trial's handle path, [seconds from onset,
        slider position] per move (checked by `mcmcp.online.slider.slider_answer`); have: the
        image keys the page holds decoded (the view leaves them out: a page that claims a face
        it has not got asks for the whole state).
        """
        keys = self.cfg.display.keys
        slider = self.cfg.paradigm == "gsp"
        key = None if device != "keyboard" else CONFIRM_KEY if slider else (
            keys.left if side == "left" else keys.right)

        def step(flow: SessionFlow, record: SessionRecord):
            if flow.screen().kind != "trial":
                raise Rejected(409, "There is no trial on show to answer; "
                                    "the page reloads to where you are.")
            pending = flow.screen().trial
            response, path = side, None
            if pending.is_slider:
                try:
                    response, path = slider_answer(pending.circle, side, rt, moves)
                except ValueError as err:
                    raise Rejected(400, str(err)) from None
            elif moves is not None or not isinstance(side, str):
                raise Rejected(400, "a two-face trial is answered with side 'left' or 'right' "
                                    "and no moves")
            rows = flow.tell(response, rt, onset, gap, None, received, key, device)
            if path is not None:
                rows[-1]["moves"] = path
            if flow.screen().kind == "end":
                meta = {**record.meta, "end_time": received}
                return rows, "complete", meta, 0
            return rows, "running", None, 0

        return self._step(token, trial, step, have)

    def event(self, token: str, kind: str) -> dict:
        """The page reports `kind` (it left or went back to full screen): recorded with the
        screen on show and the trials answered so far, at most MAX_EVENTS per session."""
        record = self._record(token)
        if record.status in OVER:
            raise Rejected(409, "This session is over.")
        with self._lock(token):
            kind_on_show = self._flow(record)[0].screen().kind if record.status == "running" \
                else record.status
        if not self.db.add_event(record.id, kind, {"on_show": kind_on_show,
                                                   "shown": record.shown},
                                 utc_now(), MAX_EVENTS):
            raise Rejected(429, "too many events recorded for this session")
        return {"recorded": kind}

    # ------------------------------------------------------------------ the experimenter

    def manage(self, uid: str, action: str) -> dict:
        """The experimenter's `action` on the session `uid`, recorded as an event; answered
        trials are never deleted. release: no browser holds the session any more, and the next
        one opening the participant's link takes it over (a lost cookie on an open link);
        end: the session stops here (status `ended`); reset: it stops (status `reset`) and the
        participant's link starts a new session, numbered after it."""
        allowed = {"release": ("consent", "running", "complete"),
                   "end": ("consent", "running"),
                   "reset": ("consent", "running", "complete", "declined", "ended")}[action]
        for _ in range(3):  # the participant may be answering right now: read again and retry
            record = self.db.by_uid(uid) if valid_id(uid, 32) else None
            if record is None or record.study != self.cfg.name:
                raise Rejected(404, f"no session {uid!r} in study {self.cfg.name!r}")
            if record.status not in allowed:
                raise Rejected(409, f"{action} works on a session that is "
                                    f"{' or '.join(allowed)}; this one is {record.status}")
            status = {"release": None, "end": "ended", "reset": "reset"}[action]
            token = secrets.token_urlsafe(24) if action == "release" else None
            with self._lock(record.id):
                done = self.db.rebind(record, token, now=utc_now(),
                                      event={"release": "released", "end": "ended",
                                             "reset": "reset"}[action],
                                      detail={"by": "experimenter", "status": record.status},
                                      status=status)
                with self._flows_lock:
                    self._flows.pop(record.id, None)
            if done and status is not None and self.chains is not None:
                self.chains.release_sessions(self.cfg.name, [(record.participant,
                                                              record.session)], time.time())
            if done:
                return {"uid": uid, "participant": record.participant,
                        "status": status or record.status}
        raise Rejected(409, "the session kept changing; try again")

    # ------------------------------------------------------------------ machinery

    def decoder(self, token: str | None, child: str | None) -> dict:
        """What the page's face decoder reads (`mcmcp.online.faces`): the decoder's bundle
        (child None) or one child's of this study ("" = the default child); for the page of a
        session of this study only. 404 when this study's server draws the faces."""
        if not self.browser_faces:
            raise Rejected(404, "this study's server draws the faces")
        self._record(token)
        if child is not None and child and child not in self.identities.codes:
            raise Rejected(404, "no such child in this study")
        with self._bundles_lock:
            if child not in self._bundles:
                model = self.loaded.model
                self._bundles[child] = (decoder_bundle(model) if child is None else child_bundle(
                    model, self.identities.stack([child])))
            return self._bundles[child]

    def _record(self, token: str | None) -> SessionRecord:
        return self._valid(self.db.by_token(token) if token is not None and valid_id(token)
                           else None)

    def _session(self, token: str | None) -> tuple[SessionRecord, dict | None]:
        """`_record`, and the session's resume point read with it (None when this process
        keeps the session's flow of the screen on show, `_flows`, so `_flow` reads nothing
        more)."""
        if token is None or not valid_id(token):
            return self._valid(None), None
        with self._flows_lock:
            kept = self._flows.get(self._ids.get(token))
        record, point = self.db.by_token_resume(token, "" if kept is None else kept[0])
        if record is not None:
            with self._flows_lock:
                self._ids[token] = record.id
                self._ids.move_to_end(token)
                while len(self._ids) > FLOW_CACHE:
                    self._ids.popitem(last=False)
        return self._valid(record), point

    def _valid(self, record: SessionRecord | None) -> SessionRecord:
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
            self._abandon()
            record = replace(record, status="abandoned")
        if record.status == "abandoned":
            raise Rejected(410, ENDED_TEXT)
        return record

    def _abandon(self, release: bool = False) -> None:
        """Mark the study's expired sessions abandoned (`mcmcp.online.limits`); shared chains:
        the chains the abandoned sessions held go back to the study (release: even when no
        session has just expired)."""
        n = self.db.abandon_expired(self.cfg.name, *cutoffs(self.cfg.online))
        if (n or release) and self.chains:
            self.chains.release_sessions(self.cfg.name, [
                (r.participant, r.session) for r in self.db.all_sessions(self.cfg.name)
                if r.status == "abandoned"], time.time())

    def _source(self, participant: str, session: int) -> SharedChains | None:
        """The chain source of a participant-session: None (its own chains), or shared chains
        leased from the study's store (rebuilt on any request, by any process)."""
        if self.chains is None:
            return None
        return SharedChains(self.chains, self.cfg, self.d, participant, session,
                            self.centroids, rebuilt=True)

    def _lock(self, key: int | str) -> threading.Lock:
        """One of the striped locks that keep this process's threads off one session's flow
        at once: a participant's requests by their token (so the session is read once, under
        it), the experimenter's by session id. Across processes the database's compare-and-set
        on the screen decides (`Database.advance`)."""
        return self._locks[hash(key) % len(self._locks)]

    def _step(self, token: str, screen: str, step: Callable,
              have: frozenset[str] = frozenset()) -> dict:
        """Run one step on the session's flow and save it in one transaction, or nothing;
        the view leaves out the faces the page has (`have`, and those the last view sent)."""
        with self._lock(token):
            record, point = self._session(token)
            if not valid_id(screen) or screen != record.screen:
                raise Rejected(409, "That screen is no longer on show (it was already answered, "
                                    "or answered in another window); the page reloads to where "
                                    "you are.")
            if record.status in OVER:
                raise Rejected(409, "This session is over.")
            flow, point = self._flow(record, point)
            with self._flows_lock:
                self._flows.pop(record.id, None)  # mutated below: cached again only if saved
            sent = self._sent(flow) | have
            source = flow.engine.source if self.chains is not None else None
            new_screen = secrets.token_urlsafe(12)
            # shared chains: the chain step joins the session's transaction (one commit)
            try:
                with self.db.transaction() if source else nullcontext() as conn:
                    if source:
                        source.conn = conn
                    rows, status, meta, acked = step(flow, record)
                    if status == "running" and flow.screen().kind == "end":  # trials skipped
                        status, meta = "complete", {**(meta or record.meta),
                                                    "end_time": utc_now()}
                    if rows:  # with the trials drawn and not answered (own chains), so a
                        # process that rebuilds the flow does not draw them again
                        if not source:
                            flow.prepare()  # as `_render` would: the same next trial
                        point = {**resume_point(rows, record.d, point,
                                                history=flow.engine.repeats),
                                 "pending": flow.engine.pending_state()}
                    if not self.db.advance(record, new_screen, now=utc_now(), acked=acked,
                                           rows=rows, status=status, meta=meta,
                                           resume=point if rows else None, conn=conn):
                        raise Rejected(409, "That screen was answered in another window; the "
                                            "page reloads to where you are.")
            finally:
                if source:
                    source.conn = None
            if any(r["kind"] == "late" for r in rows):  # kept aside; leased afresh on reload
                raise Rejected(409, LATE_TEXT)
            record = replace(record, screen=new_screen, acked=acked, status=status,
                             n_rows=record.n_rows + len(rows), meta=meta or record.meta)
            self._keep(record.id, new_screen, flow, point)
            if status == "declined":
                return self._final("declined", new_screen)
            flow.retry()  # the step may have left a wait screen: is a chain free by now?
            return self._render(record, flow, sent)

    def _final(self, kind: str, screen: str, text: str | None = None) -> dict:
        """The last page of a session that did not run to its end: declined, screened_out
        (with `text`, the reason), full (shared chains: every chain is complete, so no session
        is made), ended or reset by the experimenter; declining, screening out and a full study
        give the recruitment site's code and return link (`online.decline_*` for declined and
        full, `online.screenout_*`)."""
        spec = self.cfg.online
        view = {"screen": {"id": screen, "kind": kind, "text": text or FINAL_TEXT[kind]},
                "images": {}, "next": None, "display": self.display}
        code, url = {"declined": (spec.decline_code, spec.decline_url),
                     "full": (spec.decline_code, spec.decline_url),
                     "screened_out": (spec.screenout_code, spec.screenout_url)
                     }.get(kind, (None, None))
        if code or url:
            view["end"] = {"code": code, "redirect": url}
        return view

    def _flow(self, record: SessionRecord, point: dict | None = None
              ) -> tuple[SessionFlow, dict]:
        """The session's flow and resume point: from this process's cache, else rebuilt from
        the saved resume point (`point`, read with the record, or read here; the rows, in a
        database made before there were any)."""
        with self._flows_lock:
            cached = self._flows.get(record.id)
            if cached is not None and cached[0] == record.screen:
                self._flows.move_to_end(record.id)
                return cached[1], cached[2]
        if point is None:
            point = self.db.resume(record.id)
        if point is None:
            point = resume_point(self.db.rows(record.id, record.d), record.d)
        engine = Engine(self.cfg, self.d, record.participant, record.session, self.gates,
                        self.centroids, "human",
                        source=self._source(record.participant, record.session),
                        identities=assignment(self.cfg, record.participant,
                                              self.identities.default),
                        resume=point, lookup=lambda row: self.db.codes(record.id, row))
        engine.stamp(run=1, date=record.meta.get("date"),
                     frame_rate=record.meta["online"]["client"].get("refresh_hz"))
        intro = ([("consent", self.cfg.online.consent), ("instructions", instructions(self.cfg))]
                 if record.n_rows == 0 else [])
        flow = SessionFlow(self.cfg, engine, _Undecoded(), intro, END_TEXT, record.acked,
                           WAIT_TEXT if self.chains is not None else None)
        self._keep(record.id, record.screen, flow, point)
        return flow, point

    def _keep(self, session_id: int, screen: str, flow: SessionFlow, point: dict) -> None:
        if flow.waiting:  # rebuilt at the next request: the store says what it leased since
            return
        with self._flows_lock:
            self._flows[session_id] = (screen, flow, point)
            self._flows.move_to_end(session_id)
            while len(self._flows) > FLOW_CACHE:
                self._flows.popitem(last=False)

    def _sent(self, flow: SessionFlow) -> set[str]:
        """The image keys the view of the flow's screen gave the page (the trial on show and
        the next one, or the next one): after a step the page has them, decoded or decoding."""
        screen = flow.screen()
        if screen.kind == "trial":
            flow.prepare()  # as `_render` did: the same next trial, drawn from its own stream
            upcoming = flow.upcoming()
            return {*self._face_keys(screen.trial),
                    *(self._face_keys(upcoming[0]) if upcoming and upcoming[0] else ())}
        return set(self._face_keys(flow.pending)) if flow.pending is not None else set()

    def _render(self, record: SessionRecord, flow: SessionFlow,
                sent: set[str] = frozenset()) -> dict:
        """The view of the flow's current screen: text or trial, plus the faces to preload;
        `images` holds the PNGs (or children and codes, `_faces`) of the faces named, except
        those in `sent` (the page has them from a view before; it asks for the whole state if
        not). Callers retry a wait screen first (`SessionFlow.retry`), once per request."""
        screen = flow.screen()
        images: dict[str, str | dict] = {}
        view: dict = {"screen": {"id": record.screen, "kind": screen.kind, "text": screen.text},
                      "images": images, "next": None, "display": self.display}
        if screen.kind == "wait":
            view["retry"] = WAIT_SECONDS
        if screen.kind == "trial":
            flow.prepare()
            view["screen"].update(prompt=screen.prompt, progress=screen.progress,
                                  images=self._faces(screen.trial, images, sent))
            if screen.trial.is_slider:
                view["screen"]["slider"] = slider_view(screen.trial.circle)
            upcoming = flow.upcoming()
            if upcoming is not None and upcoming[0] is not None:
                view["next"] = self._faces(upcoming[0], images, sent)
        elif screen.kind == "end":
            view["end"] = {"code": self.cfg.online.completion_code,
                           "redirect": self.cfg.online.redirect_url}
        elif flow.pending is not None:
            view["next"] = self._faces(flow.pending, images, sent)
        return view

    @staticmethod
    def _face_codes(trial) -> np.ndarray:
        """The codes of a trial's faces in page order: (2, d) [left, right] of a pair, or a
        slider's (K, d) circle points in slider order (position 0 at the left end)."""
        if not trial.is_slider:
            return np.stack([trial.left, trial.right])
        k = len(trial.circle.points)
        return trial.circle.points[slider_to_point(np.arange(k), trial.circle.shift, k)]

    @classmethod
    def _face_keys(cls, trial) -> list[str]:
        """Image keys of a trial's faces in page order (`_face_codes`): a hash of the code and
        the child, so a key names one image for ever."""
        return [hashlib.sha256(np.asarray(code, dtype=np.float64).tobytes()
                               + trial.identity.encode("utf-8")).hexdigest()[:20]
                for code in cls._face_codes(trial)]

    def _faces(self, trial, out: dict[str, str | dict], sent: set[str] = frozenset()
               ) -> list[str]:
        """`_face_keys` of a trial; the PNG data URLs of its faces go into `out`, except
        those already `sent`: from this process's cache, else decoded (in one batch). With
        faces drawn by the browser, each face's child and code go instead."""
        keys, codes = self._face_keys(trial), self._face_codes(trial)
        if self.browser_faces:
            for key, code in zip(keys, codes, strict=True):
                if key not in sent:
                    out[key] = {"child": trial.identity, "code": [float(v) for v in code]}
            return keys
        missing = []
        with self._pngs_lock:
            for i, key in enumerate(keys):
                if key in sent:
                    continue
                if key in self._pngs:
                    self._pngs.move_to_end(key)
                    out[key] = self._pngs[key]
                else:
                    missing.append(i)
        if not missing:
            return keys
        faces = self.renderer.images(codes[missing], [trial.identity] * len(missing))
        urls = [png_data_url(image) for image in faces]
        with self._pngs_lock:
            for i, url in zip(missing, urls, strict=True):
                out[keys[i]] = self._pngs[keys[i]] = url
            while len(self._pngs) > PNG_CACHE:
                self._pngs.popitem(last=False)
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
    """A (H, W) float image in [0, 1] as an 8-bit grayscale PNG data URL.

    Written here rather than by PIL, whose machinery around the compression cost half the
    time of a 64 x 64 face: every row is stored as its difference to the row above (PNG's Up
    filter, mod 256) and compressed by zlib's run-length strategy: a face of the default model
    takes 0.12 ms instead of PIL's 0.23 at its fastest level, in as many bytes (2.26 KB against
    2.28). PNG is lossless: a browser gets the same pixels (tests/online/test_serve_speed.py)."""
    pixels = np.clip(np.rint(np.asarray(image, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)
    h, w = pixels.shape
    rows = np.empty((h, w + 1), dtype=np.uint8)
    rows[:, 0] = PNG_UP
    rows[0, 1:] = pixels[0]
    np.subtract(pixels[1:], pixels[:-1], out=rows[1:, 1:])  # uint8: mod 256, as PNG's Up
    deflate = zlib.compressobj(1, zlib.DEFLATED, 15, 9, zlib.Z_RLE)
    png = b"".join((PNG_SIGNATURE,
                    _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)),
                    _png_chunk(b"IDAT", deflate.compress(rows.tobytes()) + deflate.flush()),
                    _png_chunk(b"IEND", b"")))
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC-32 of type and data."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
