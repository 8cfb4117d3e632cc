"""Lab sessions of an across-participant design share the study's chains through the chain
store (one lab computer over days: a SQLite file); a session killed with kill -9 resumes, goes
on with the chains its crashed run held (their leases had not run out) and leaves every chain
one unbroken line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pandas as pd

from mcmcp.chainstore import ChainStore
from mcmcp.store import read_trials
from tests.lab.test_session import ROOT, run_cli, write_config

SHARED = {"chains": {"per_emotion": 2, "across_participants": True},
          "trials": {"per_chain": 200, "per_hold": 3, "per_participant": 12, "practice": 1,
                     "catch_rate": 0.0, "break_every": 0}}


def files_and_store(out, study="small"):
    """(participant, chain, chain_step) of the chain rows in every session file, and in the
    chain store."""
    rows = pd.concat([read_trials(p) for p in sorted(out.rglob("trials.csv"))])
    steps = rows[rows["kind"].isin(["chain", "gate"])]
    store = ChainStore(f"sqlite:///{out / 'shared_chains.sqlite'}")
    db = pd.DataFrame(store.steps(study))
    return (set(zip(steps["participant"], steps["chain"], steps["chain_step"], strict=True)),
            set(zip(db["participant"], db["chain"], db["chain_step"], strict=True)), store)


def test_lab_sessions_share_chains_and_resume_after_kill9(tmp_path):
    cfg = str(write_config(tmp_path, **SHARED))
    out = tmp_path / "out"
    for pid in ("P001", "P002"):
        assert run_cli("--config", cfg, "--participant", pid, "--no-window", "--out",
                       str(out)) == 0
    cmd = [sys.executable, "-m", "mcmcp.run", "--config", cfg, "--participant", "P003",
           "--no-window", "--agent-delay", "0.05", "--out", str(out)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    deadline = time.monotonic() + 90
    for line in proc.stdout:  # mid-hold: trial 6 is the second hold's second trial
        if line.startswith("ONSET trial=6 ") or time.monotonic() > deadline:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    _, _, store = files_and_store(out)
    assert store.chains("small")["holder"].eq("P003").any()  # the crashed run's holds
    # as if the crash came between the store's commit and the file's write: the last chain
    # row is committed but not in the file
    path = out / "sub-P003/ses-01/trials.csv"
    lines = path.read_text().splitlines(keepends=True)
    assert ",chain," in lines[-1]
    path.write_text("".join(lines[:-1]))
    t0 = time.monotonic()
    assert run_cli("--config", cfg, "--participant", "P003", "--no-window", "--resume",
                   "--out", str(out)) == 0
    assert time.monotonic() - t0 < 60  # no wait for a lease to run out
    files, db, store = files_and_store(out)
    assert files == db  # every committed step is in a file, every file step is committed
    assert store.check("small") == []
    assert store.chains("small")["holder"].isna().all()  # nothing left held
    p3 = read_trials(out / "sub-P003/ses-01/trials.csv")
    assert (p3["kind"] == "chain").sum() == 12 and p3["row"].tolist() == list(range(len(p3)))
    runs = p3[p3["kind"] == "chain"].groupby("lease")["run"].nunique()
    assert (runs == 2).any()  # a hold the crash cut went on under the same lease
    leases = store.leases("small")
    assert set(leases["participant"]) == {"P001", "P002", "P003"}
    assert (leases.groupby("chain")["participant"].nunique() >= 2).all()  # chains shared


def test_lab_sessions_skip_complete_emotions_and_a_full_study_starts_none(tmp_path, capsys):
    """One chain per emotion, 4 trials long, two holds of 3 per emotion: a chain trial for
    which no chain is left (its chains complete, or held by the participant's other hold) is
    skipped, not waited for; P002 completes what P001 left and fills the study; P003 is refused
    with a one-line message, and no lease or session is made."""
    cfg = str(write_config(tmp_path, chains={"per_emotion": 1, "across_participants": True},
                           trials={**SHARED["trials"], "per_chain": 4}))
    out = tmp_path / "out"
    for pid in ("P001", "P002"):
        assert run_cli("--config", cfg, "--participant", pid, "--no-window", "--out",
                       str(out)) == 0
    files, db, store = files_and_store(out)
    assert files == db and store.check("small") == []
    assert (store.chains("small")["shown"] == 4).all()
    p2 = read_trials(out / "sub-P002/ses-01/trials.csv")
    assert (p2["kind"] == "chain").sum() == 2  # one trial left on each chain
    n_leases = len(store.leases("small"))
    capsys.readouterr()
    assert run_cli("--config", cfg, "--participant", "P003", "--no-window", "--out",
                   str(out)) != 0
    assert "is full" in capsys.readouterr().err
    assert len(store.leases("small")) == n_leases and not (out / "sub-P003").exists()
