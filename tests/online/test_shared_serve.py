"""The online server serves across-participant chains: participants take turns on the study's
chains, wait when none is free, and an answer after its lease ran out gets 409, is kept aside
and never enters a chain; the chain step and the session's rows commit in one transaction; the
chains of abandoned sessions go back to the study; MCMCP and GSP alike. The last test is the
issue's "done when" run, small: participants over HTTP, two server processes behind random
routing on PostgreSQL, one killed with SIGKILL mid-run (benchmarks/bench_shared_serve.py runs
it with 200)."""

from __future__ import annotations

import time

from sharedload import run_load
from sqlalchemy import event, update
from starlette.testclient import TestClient

from mcmcp.chainstore import chains_table
from mcmcp.online.database import sessions
from mcmcp.online.study import LATE_TEXT
from tests.online.test_serve import ONLINE, TOKEN, begin, online_config, serve, step

SHARED = {"across_participants": True, "per_emotion": 2, "lease_seconds": 60}
TRIALS = {"per_chain": 40, "per_hold": 2, "per_participant": 4, "practice": 0,
          "catch_rate": 0.0, "repeat_rate": 0.0}


def shared_study(tmp_path, url, **changes):
    config = online_config(tmp_path, **{"chains": SHARED, "trials": TRIALS, **changes})
    return serve(config, url)


def to_trial(client: TestClient, view: dict) -> dict:
    """Past message screens to the next trial or wait screen."""
    while view["screen"]["kind"] not in ("trial", "wait", "end"):
        view = step(client, view)
    return view


def take_turns(clients: dict[str, TestClient], views: dict[str, dict], rounds: int) -> None:
    """Every participant in turn answers their trial or asks again on a wait screen, until
    all reach the end (`views` updated in place); fails after `rounds` rounds."""
    for _ in range(rounds):
        if all(v["screen"]["kind"] == "end" for v in views.values()):
            return
        for p, c in clients.items():
            kind = views[p]["screen"]["kind"]
            if kind == "wait":
                views[p] = c.get("/api/state").json()
            elif kind != "end":
                views[p] = step(c, views[p])
    assert all(v["screen"]["kind"] == "end" for v in views.values()), \
        {p: v["screen"]["kind"] for p, v in views.items()}


def chain_rows(study) -> set:
    """(chain, chain_step, lease) of every chain and gate row of every session."""
    out = set()
    for r in study.db.all_sessions():
        out |= {(int(x["chain"]), int(x["chain_step"]), x["lease"])
                for x in study.db.rows(r.id, r.d) if x["kind"] in ("chain", "gate")}
    return out


def store_steps(study) -> set:
    steps = study.chains._step_frame(study.cfg.name)
    return {(int(r.chain), int(r.chain_step), r.lease)
            for r in steps[["chain", "chain_step", "lease"]].itertuples()}


def experimenter_page(client: TestClient, ready, timeout: float = 30.0) -> dict:
    """The experimenter page's numbers once `ready(numbers)` (the page refreshes them at most
    every 2 s)."""
    deadline = time.monotonic() + timeout
    while True:
        page = client.get("/api/experimenter",
                          headers={"authorization": f"Bearer {TOKEN}"}).json()
        if ready(page) or time.monotonic() > deadline:
            return page
        time.sleep(0.2)


def test_participants_take_turns_and_wait_for_a_free_chain(tmp_path, db_url):
    """Two chains per emotion, three participants: the third is told to wait (a JSON state,
    not an error; acknowledging it is refused), then gets a chain as soon as one is handed
    back; every chain is one unbroken line and its steps are exactly the sessions' rows."""
    study, client = shared_study(tmp_path, db_url)
    clients = {p: TestClient(client.app) for p in "ABC"}
    views = {p: to_trial(c, begin(c, participant=p)) for p, c in clients.items()}
    assert [views[p]["screen"]["kind"] for p in "AB"] == ["trial", "trial"]
    wait = views["C"]
    assert wait["screen"]["kind"] == "wait" and wait["retry"] > 0
    assert "next face is being prepared" in wait["screen"]["text"]
    assert clients["C"].get("/api/state").json()["screen"]["kind"] == "wait"  # still none
    refused = clients["C"].post("/api/ack", json={"screen": wait["screen"]["id"]})
    assert refused.status_code == 409
    page = client.get("/api/experimenter", headers={"authorization": f"Bearer {TOKEN}"}).json()
    held = {c["chain"]: c["holder"] for c in page["shared"]["chains"]}
    assert len(held) == 4 and sorted(h for h in held.values() if h) == ["A", "B"]
    assert all(c["expired_leases"] == 0 for c in page["shared"]["chains"])  # none ran out
    take_turns(clients, views, rounds=49)
    name = study.cfg.name
    assert study.chains.check(name) == []
    leases = study.chains.leases(name)
    assert set(leases["participant"]) == {"A", "B", "C"}
    assert (leases.groupby("chain")["participant"].nunique() >= 1).all()
    assert store_steps(study) == chain_rows(study)  # the same steps, in the store and the rows
    page = experimenter_page(client, lambda p: sum(c["shown"] for c in p["shared"]["chains"])
                             == 12)
    assert all(c["holder"] is None for c in page["shared"]["chains"])
    assert {g["emotion"] for g in page["shared"]["groups"]} == {"happy", "sad"}
    assert all(g["participants"] >= 1 for g in page["shared"]["groups"]), page["shared"]


def test_a_late_answer_is_409_kept_aside_and_a_fresh_lease_follows(tmp_path, db_url):
    """A's lease runs out and B takes A's chain over; A's answer then reaches another server
    process (which rebuilds A's session from the store): 409 with a clear message, kept in the
    audit table and as A's `late` row, not in B's chain; A's next trial is on a fresh lease."""
    study, client = shared_study(tmp_path, db_url)
    other, other_client = serve(tmp_path / "small.yaml", db_url)  # a second server process
    a = TestClient(client.app)
    view = to_trial(a, begin(a, participant="A"))
    chain_a = study.chains.leases(study.cfg.name)["chain"].iloc[0]
    with study.db.engine.begin() as conn:  # A's lease ran out
        conn.execute(update(chains_table).values(expires=0.0))
    b = TestClient(client.app)
    view_b = to_trial(b, begin(b, participant="B"))
    assert chain_a in set(study.chains.chains(study.cfg.name).query("holder == 'B'")["chain"])
    view_b = step(b, view_b)  # B moves A's old chain on

    a_elsewhere = TestClient(other_client.app, cookies=a.cookies)
    res = a_elsewhere.post("/api/answer", json={"trial": view["screen"]["id"], "side": "left",
                                                 "rt": 0.5, "onset": 1.0, "gap": None,
                                                 "device": "keyboard"})
    assert res.status_code == 409 and res.json()["error"] == LATE_TEXT
    late = study.chains.late(study.cfg.name)
    assert list(late["participant"]) == ["A"] and list(late["reason"]) == ["taken"]
    [record] = [r for r in study.db.all_sessions() if r.participant == "A"]
    rows = study.db.rows(record.id, record.d)
    assert [r["kind"] for r in rows] == ["late"]
    again = to_trial(a, a.get("/api/state").json())
    assert again["screen"]["kind"] == "trial"
    step(a, again)  # accepted, on a fresh lease
    leases = study.chains.leases(study.cfg.name)
    mine = leases[leases["participant"] == "A"]
    assert len(mine) >= 2 and mine["given_up"].notna().sum() >= 1
    assert study.chains.check(study.cfg.name) == []
    assert store_steps(study) == chain_rows(study)


def test_the_chain_step_and_the_rows_commit_together(tmp_path, db_url):
    """When the session's rows cannot be written, the chain does not move either (one
    transaction): the answer can be sent again and is taken once."""
    study, client = shared_study(tmp_path, db_url)
    a = TestClient(client.app, raise_server_exceptions=False)
    view = to_trial(a, begin(a, participant="A"))
    before = study.chains.chains(study.cfg.name)

    def fail(conn, cursor, statement, *args):
        if statement.lstrip().upper().startswith("INSERT INTO TRIALS"):
            raise RuntimeError("disk gone while writing the rows")

    event.listen(study.db.engine, "before_cursor_execute", fail)
    body = {"trial": view["screen"]["id"], "side": "left", "rt": 0.5, "onset": 1.0,
            "gap": None, "device": "keyboard"}
    assert a.post("/api/answer", json=body).status_code == 500
    event.remove(study.db.engine, "before_cursor_execute", fail)
    after = study.chains.chains(study.cfg.name)
    assert after["version"].tolist() == before["version"].tolist()
    assert len(study.chains._step_frame(study.cfg.name)) == 0
    assert a.post("/api/answer", json=body).status_code == 200
    assert store_steps(study) == chain_rows(study) and len(chain_rows(study)) >= 1


def test_an_abandoned_session_hands_its_chains_back(tmp_path, db_url):
    """A session that expires (issue 21's limits) gives its chains back at once, from their
    last committed state, instead of holding them until the lease runs out."""
    study, client = shared_study(tmp_path, db_url,
                                 online={**ONLINE, "expire_after_minutes": 5})
    a = TestClient(client.app)
    step(a, to_trial(a, begin(a, participant="A")))
    name = study.cfg.name
    assert (study.chains.chains(name)["holder"] == "A").any()
    with study.db.engine.begin() as conn:  # A has not been seen for an hour
        conn.execute(update(sessions).values(updated="2000-01-01T00:00:00.000+00:00"))
    b = TestClient(client.app)
    begin(b, participant="B")  # a new participant: expired sessions are marked first
    assert not (study.chains.chains(name)["holder"] == "A").any()
    leases = study.chains.leases(name)
    assert (leases.query("participant == 'A'")["end_reason"] == "expired").all()
    assert study.chains.check(name) == []


def test_a_full_study_ends_waiting_sessions_and_turns_newcomers_away(tmp_path, db_url):
    """One chain per emotion, two trials long, for two participants who each want four: as
    chains complete, the participants' trials of those emotions are skipped, so the one waiting
    for a chain is not kept waiting for ever but ends with the end page and completion code
    (complete, not abandoned); a third who arrives when every chain is complete gets the
    "study is full" page with the recruitment site's code, and is granted no lease."""
    study, client = shared_study(
        tmp_path, db_url, chains={**SHARED, "per_emotion": 1},
        trials={**TRIALS, "per_chain": 2}, gate={"kind": "none"},
        online={**ONLINE, "decline_code": "NOCONSENT1"})
    clients = {p: TestClient(client.app) for p in "AB"}
    views = {p: to_trial(c, begin(c, participant=p)) for p, c in clients.items()}
    assert sorted(v["screen"]["kind"] for v in views.values()) == ["trial", "wait"]
    take_turns(clients, views, rounds=29)
    assert all(v["end"]["code"] == "CODE-123" for v in views.values())
    assert {r.status for r in study.db.all_sessions()} == {"complete"}
    name = study.cfg.name
    assert (study.chains.chains(name)["shown"] == 2).all()
    assert study.chains.check(name) == [] and store_steps(study) == chain_rows(study)
    n_leases = len(study.chains.leases(name))
    late = TestClient(client.app)
    full = begin(late, participant="C")
    assert full["screen"]["kind"] == "full" and "study is full" in full["screen"]["text"]
    assert full["end"]["code"] == "NOCONSENT1"
    assert len(study.chains.leases(name)) == n_leases  # no lease for C
    assert {r.participant for r in study.db.all_sessions()} == {"A", "B"}


def test_gsp_slider_trials_share_chains_too(tmp_path):
    """The slider page answers shared GSP chains the same way."""
    study, client = shared_study(tmp_path, f"sqlite:///{tmp_path / 'gsp.sqlite'}",
                                 paradigm="gsp", gate={"kind": "none"})
    for p in "AB":
        c = TestClient(client.app)
        view = to_trial(c, begin(c, participant=p))
        while view["screen"]["kind"] != "end":
            screen = view["screen"]
            if screen["kind"] == "trial":
                assert "slider" in screen
                res = c.post("/api/answer", json={
                    "trial": screen["id"], "position": 1, "moves": [[0.2, 1]], "rt": 0.5,
                    "onset": 1.0, "gap": None, "device": "mouse"})
                assert res.status_code == 200, res.text
                view = res.json()
            else:
                view = step(c, view)
    assert study.chains.check(study.cfg.name) == []
    assert store_steps(study) == chain_rows(study)
    assert study.chains.leases(study.cfg.name)["participant"].nunique() == 2


def test_done_when_over_http_two_processes_and_a_kill(tmp_path, postgres):
    """40 participants over HTTP, 20% leaving part-way, 5% waiting past their lease before
    one answer, two server processes behind random routing on PostgreSQL, one killed with
    SIGKILL and restarted mid-run: every chain one unbroken line, never held by two; no
    accepted answer lost; every late answer refused, kept aside and outside every chain."""
    config = online_config(
        tmp_path, chains={**SHARED, "per_emotion": 4, "lease_seconds": 3},
        trials={**TRIALS, "per_chain": 1000, "per_hold": 3, "per_participant": 6},
        gate={"kind": "none"}, online={**ONLINE, "starts_per_minute": None})
    out = run_load(config, postgres.new_database(), tmp_path, 40, seed=7)
    assert out["waits"] > 0  # fewer chains than participants: some were told to wait
    assert out["killed"].get("at_answers", 0) > 0, out["killed"]
    assert out["problems"] == [], out["problems"]
    assert out["lost"] == [] and out["late_missing"] == []
    assert out["planned_late"] == 2 and out["planned_late_not_refused"] == []
    assert out["late_kept"] >= out["refused_late"] >= 2
    assert out["steps_not_in_sessions"] == out["session_steps_not_in_store"] == 0
    assert out["late_rows_not_kept"] == 0
    assert out["accepted"] > 0.7 * out["expected_answers"]
