"""What makes an answer cheap must not change what it shows or counts: a server process's frozen
decoder (`mcmcp.render.FrozenDecoder`, each child's part of decoding folded in) sends the same PNG
pixels as the full decoder, and the server's own PNG writer the same pixels as the image; an
engine rebuilt from a resume point draws no start points it would overwrite and goes on exactly,
with no history kept where no repeat trial reads it; PostgreSQL saves an answer in one statement,
still compare-and-set, every value as given; the experimenter page counts catch answers instead
of reading them, with the report's numbers."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from analysis.diagnostics import catch_accuracy
from mcmcp import engine as engine_module
from mcmcp.engine import Engine, resume_point
from mcmcp.online.database import Database, Unavailable
from mcmcp.online.monitor import _catch
from mcmcp.online.study import png_data_url
from mcmcp.render import FrozenDecoder
from tests.core import test_engine
from tests.core.test_engine import CENTROIDS, D, config, gates, run, strip
from vae.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[2]


def test_frozen_decoder_sends_the_full_decoders_pixels():
    """500 random faces of the committed model, 250 of its default child and 250 of another: the
    8-bit pixels a page gets (png_data_url's rounding) equal the full decoder's, but for a few
    float roundings that land the other side of a half (measured: none to a handful of the
    2 million pixels, each by 1/255)."""
    model = load_checkpoint(ROOT / "vae/checkpoints/default.pt").model.eval()
    z = torch.nn.functional.normalize(torch.randn(250, 3, generator=torch.Generator()
                                                  .manual_seed(1)), dim=1)
    with torch.no_grad():  # another child: the default's face mirrored
        child = model.identity_code(model.default_reference.flip(-1))
    frozen = FrozenDecoder(model)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as a server process (mcmcp.serve): a face at a time is slow on more
    try:
        with torch.inference_mode():
            for identity in (None, child.expand(250, -1)):
                full = model.decode(z, identity)
                fast = frozen(z, identity)
                pixels = [np.rint(x.numpy().astype(np.float64) * 255) for x in (full, fast)]
                differ = np.abs(pixels[0] - pixels[1])
                assert differ.max() <= 1 and (differ > 0).sum() <= 50, (differ > 0).sum()
    finally:
        torch.set_num_threads(threads)
    assert len(frozen._children) == 2  # traced once per child
    assert all(isinstance(m, torch.jit.ScriptModule) for m in frozen._children.values())


def test_png_data_urls_decode_to_the_rounded_pixels():
    """The server's own PNG writer, read back by another decoder (PIL): every pixel is the
    image's value x 255 rounded and clipped, faces and odd shapes alike, with values at and
    beyond the ends and halfway between two levels."""
    rng = np.random.default_rng(3)
    model = load_checkpoint(ROOT / "vae/checkpoints/default.pt").model.eval()
    with torch.no_grad():
        faces = model.decode(torch.nn.functional.normalize(
            torch.randn(4, 3, generator=torch.Generator().manual_seed(2)), dim=1))[:, 0].numpy()
    odd = [rng.random((7, 5)), np.array([[0.0, 1.0, -0.2, 1.3, 0.5 / 255, 254.5 / 255]]),
           (np.arange(256 * 3) % 256 / 255.0).reshape(3, 256), rng.random((1, 1))]
    for image in [*faces, *odd]:
        url = png_data_url(image)
        assert url.startswith("data:image/png;base64,")
        got = np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))
        want = np.clip(np.rint(np.asarray(image, dtype=np.float64) * 255.0), 0, 255)
        assert got.dtype == np.uint8 and np.array_equal(got, want)


def test_frozen_decoder_keeps_the_models_decode_where_a_trace_cannot_follow_it():
    class Branching(torch.nn.Module):  # its steps depend on the code's values
        config = SimpleNamespace(latent_dim=3)

        def decode(self, z, identity=None):
            return (z if z.sum() > 0 else -z)[:, :1, None, None].expand(-1, -1, 2, 2)

    frozen = FrozenDecoder(Branching())
    z = torch.tensor([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]])
    assert torch.equal(frozen(z), torch.ones(2, 1, 2, 2))  # each face decoded as the model does
    assert not isinstance(frozen._children[None], torch.jit.ScriptModule)


@pytest.mark.parametrize("answers", [[], [None], [True, True, True, True, False],
                                     [True, False, False, None], [True] * 9])
def test_catch_numbers_from_counts_equal_the_reports(answers):
    rows = pd.DataFrame({"participant": "P1", "kind": ["catch"] * len(answers) + ["chain"],
                         "correct": pd.array([*answers, None], dtype="boolean")})
    report = catch_accuracy(rows).iloc[0]
    scored = [a for a in answers if a is not None]
    got = _catch(len(scored), sum(scored))
    assert got["catch_n"] == report["n_catch"]
    assert got["catch_flagged"] == report["flagged"]
    if np.isnan(report["accuracy"]):
        assert got["catch_accuracy"] is None
    else:
        assert got["catch_accuracy"] == pytest.approx(report["accuracy"])


def test_page_recomputes_r_hats_only_within_its_cpu_budget(tmp_path, monkeypatch):
    from sqlalchemy import event
    from starlette.testclient import TestClient

    from mcmcp.online import monitor as monitor_module
    from tests.online.test_serve import begin, finish, online_config, serve, step, to_trial

    config = online_config(tmp_path, trials={"per_chain": 4, "practice": 0, "catch_rate": 0.5,
                                             "break_every": 0})
    study, client = serve(config, f"sqlite:///{tmp_path / 'db.sqlite'}")
    view = to_trial(client, begin(client, participant="B1"))
    for _ in range(6):  # in progress: its R-hat waits for the page's CPU credit
        view = step(client, view)
    monkeypatch.setattr(monitor_module, "RHAT_CREDIT_S", 0.0)  # no CPU for R-hats at all
    page = monitor_module.Monitor(study.db, study.cfg.name, study.d, study.n_shown)
    statements = []
    event.listen(study.db.engine, "before_cursor_execute",
                 lambda conn, cursor, statement, *args: statements.append(statement))
    data = page.summary()
    assert not [s for s in statements if "FROM trials" in s and "count(" not in s]
    (b1,) = data["participants"]
    assert b1["rhat_time"] is None and b1["catch_n"] > 0  # counted, not read
    monkeypatch.setattr(monitor_module, "RHAT_CREDIT_S", 1.0)
    monkeypatch.setattr(monitor_module, "RHAT_SHARE", 1e6)  # the credit back at once
    other = TestClient(client.app)
    finish(other, begin(other, participant="B2"), np.random.default_rng(2))
    assert all(p["rhat_time"] is not None for p in page.summary()["participants"])


def test_a_session_starts_without_reading_the_packages_metadata(tmp_path, monkeypatch):
    """A session records the versions of the packages its process runs, read once when the
    process opens the study, not at every start (half a start's CPU)."""
    from importlib import metadata

    from mcmcp.store import versions
    from tests.online.test_serve import begin, online_config, serve

    study, client = serve(online_config(tmp_path), f"sqlite:///{tmp_path / 'db.sqlite'}")
    read = []
    version = metadata.version
    monkeypatch.setattr(metadata, "version", lambda name: read.append(name) or version(name))
    for participant in ("B1", "B2"):
        begin(client, participant=participant)
    assert read == []
    monkeypatch.undo()
    assert [r.meta["versions"] for r in study.db.all_sessions()] == [versions()] * 2


ckpt = test_engine.ckpt  # the engine tests' checkpoint fixture


@pytest.mark.parametrize("stop", [1, 5, 9, 14, 20])  # block 1 partly / wholly moved, block 2
def test_engine_from_a_resume_point_draws_no_start_it_overwrites(ckpt, stop, monkeypatch):
    cfg = config(ckpt, per_chain=5)  # two emotions, three chains each, catch and repeat trials
    full = run(Engine(cfg, D, "P1", 1, gates(), CENTROIDS), prefetch=False)
    first = run(Engine(cfg, D, "P1", 1, gates(), CENTROIDS), prefetch=True, stop=stop)
    point = resume_point(first, D)
    codes = {r["row"]: tuple(np.array([r[f"{p}_{i}"] for i in range(D)])
                             for p in ("current", "proposal")) for r in first}
    drawn = []
    start_points = engine_module.start_points
    monkeypatch.setattr(engine_module, "start_points",
                        lambda cfg, d, emotion, *a: drawn.append(emotion)
                        or start_points(cfg, d, emotion, *a))
    resumed = Engine(cfg, D, "P1", 1, gates(), CENTROIDS, resume=point, lookup=codes.get)
    moved = {int(c) // 3 for c in point["chains"]}  # blocks with a moved chain
    whole = {b for b in moved if all(str(3 * b + i) in point["chains"] for i in range(3))}
    assert len(drawn) == 2 - len(whole)  # only blocks with an unmoved chain draw starts
    assert strip(first + run(resumed, prefetch=True)) == strip(full)


@pytest.mark.parametrize("repeat_rate", [0.15, 0.0])
def test_engine_rebuilt_at_every_answer_asks_its_pending_trials_without_drawing(ckpt,
                                                                              monkeypatch,
                                                                              repeat_rate):
    """As a server process that rebuilds the session at every answer: the resume point saved
    with the answer carries the trials on show and next (`pending_state`), so each trial is
    drawn once in the whole session, and the rows are those of one uninterrupted engine. Without
    repeat trials the point keeps no history (it would grow by a trial at every answer), and
    the point it is made from is never changed."""
    # gate and catch trials, a break, two blocks; repeat trials or none
    cfg = config(ckpt, per_chain=5, repeat_rate=repeat_rate)
    full = run(Engine(cfg, D, "P1", 1, gates(), CENTROIDS), prefetch=True)
    drawn = []
    stream = Engine.stream
    monkeypatch.setattr(Engine, "stream", lambda self, tag, counter: drawn.append(
        (tag, counter)) or stream(self, tag, counter))
    engine = Engine(cfg, D, "P1", 1, gates(), CENTROIDS)
    rows, point, codes = [], resume_point([], D), {}
    while (trial := engine.ask()) is not None:  # the trial on show (stored after the first)
        if engine.can_ask():
            engine.ask()  # the next one, drawn before the answer is saved (study._step)
        told = engine.tell(trial, test_engine.respond(trial), 0.5)
        rows += told
        codes.update({r["row"]: tuple(np.array([r[f"{p}_{i}"] for i in range(D)])
                                      for p in ("current", "proposal")) for r in told})
        start, before = point, json.dumps(point)
        point = json.loads(json.dumps({**resume_point(told, D, start, engine.repeats),
                                       "pending": engine.pending_state()}))
        assert json.dumps(start) == before  # the point it was made from is as it was
        assert len(point["pending"]) == len(engine.pending)
        assert engine.repeats == (repeat_rate > 0)
        assert engine.repeats or point["history"] == []
        engine = Engine(cfg, D, "P1", 1, gates(), CENTROIDS, resume=point, lookup=codes.get)
    assert strip(rows) == strip(full)
    trials = [counter for tag, counter in drawn if tag == engine_module.TRIAL_STREAM]
    assert sorted(trials) == list(range(1, len(engine.schedule) + 1))  # each drawn once


def test_a_stored_trial_whose_chain_moved_on_is_drawn_again(ckpt):
    cfg = config(ckpt, per_chain=5)
    engine = Engine(cfg, D, "P1", 1, gates(), CENTROIDS)
    rows = run(engine, prefetch=False, stop=4)  # practice, then chain trials
    trial = engine.pending[0]
    assert trial.kind == "chain"
    stale = json.loads(json.dumps(engine.pending_state()))
    stale[0]["fields"]["iteration"] -= 1  # drawn when its chain was a step behind
    rebuilt = Engine(cfg, D, "P1", 1, gates(), CENTROIDS,
                     resume={**resume_point(rows, D), "pending": stale})
    again = rebuilt.ask()
    assert again.trial == trial.trial and np.array_equal(again.right, trial.right)
    assert again.fields["iteration"] == trial.fields["iteration"]  # drawn, not the stored one


def test_postgres_saves_an_answer_in_one_statement_and_only_once(postgres, tmp_path):
    from sqlalchemy import event

    db = Database(postgres.new_database())
    record = db.create(uid="u" * 32, study="s", participant="P1", session=1, token="t" * 24,
                       d=2, screen="first", meta={}, now="2026-01-01T00:00:00Z")
    row = {"row": 0, "trial": 1, "kind": "chain", "current_0": 1.0, "current_1": 0.0,
           "proposal_0": 0.0, "proposal_1": 1.0, "rt": 0.1 + 0.2, "accepted": True,
           "gate_prob": float("nan"), "log_gate_current": -float("inf"), "response": 'l"é\\'}
    trace = open(tmp_path / "libpq-trace", "w+")  # libpq's log of every protocol message
    event.listen(db.engine, "checkout", lambda c, *_: c.pgconn.trace(trace.fileno()))
    event.listen(db.engine, "checkin", lambda c, *_: c.pgconn.untrace())
    assert db.advance(record, "second", now="2026-01-01T00:00:01Z", acked=0, rows=[row],
                      resume={"shown": 1})
    trace.seek(0)
    messages = [line.split("\t") for line in trace]  # (a statement's lines go on untabbed)
    sent = [m[3].strip() for m in messages if len(m) > 3 and m[1] == "F"]
    # the UPDATE and the INSERT are one statement (its own transaction): one Sync, one wait
    assert sent.count("Sync") == 1 and sent.count("Execute") == 1
    (saved,) = db.rows(record.id, 2)  # every value as it was given, NaN and infinity too
    assert {k: saved[k] for k in row if k != "gate_prob"} == {
        k: v for k, v in row.items() if k != "gate_prob"}
    assert saved["gate_prob"] != saved["gate_prob"] and saved["chain"] is None
    # the same screen answered again (another process, a replayed request): nothing written
    assert not db.advance(record, "third", now="2026-01-01T00:00:02Z", acked=0,
                          rows=[{**row, "row": 1}])
    # a save that fails part-way (a row saved before) keeps nothing, not even the new screen
    moved = db.by_token("t" * 24)
    with pytest.raises(Unavailable):
        db.advance(moved, "fourth", now="2026-01-01T00:00:03Z", acked=0, rows=[row])
    assert db.counts() == {record.id: 1}
    assert db.by_token("t" * 24).screen == "second" and db.resume(record.id) == {"shown": 1}
    assert db.advance(moved, "fifth", now="2026-01-01T00:00:04Z", acked=0,
                      rows=[{**row, "row": 1}])  # the connection is usable again
    assert db.counts() == {record.id: 2}


def test_reads_by_psycopg_drop_the_connections_a_restart_broke():
    """The statements psycopg runs itself (the request's read, the save) fail once after
    PostgreSQL restarts, like SQLAlchemy's own: not once for every idle pooled connection."""
    from pgcluster import Cluster

    with Cluster() as pg:
        db = Database(pg.new_database())
        idle = [db.engine.connect() for _ in range(4)]  # four connections kept in the pool
        for conn in idle:
            conn.close()
        pg.halt()
        pg.resume()
        with pytest.raises(Unavailable):
            db.by_token("t" * 24)
        assert db.by_token("t" * 24) is None  # connects afresh: no session of that token
        db.close()
