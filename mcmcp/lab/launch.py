"""A lab session, once its command is known to be sound: inputs, window, files, then the run.

`python -m mcmcp.run` parses and checks the command line and calls `run_lab_session`, which opens
the checked model, faces and children (`mcmcp.materials`), the display (the PsychoPy window of
`mcmcp.lab.screen`, or a headless agent display), creates or resumes the session's files
(`mcmcp.store`) and drives the shared session loop (`mcmcp.session.run_session`). An
across-participant design (`chains.across_participants`) takes its chains from the shared chain
store (`--chain-store`; `mcmcp.shared`), so several lab computers, or one over days, share them.
"""

from __future__ import annotations

import sys
from pathlib import Path

from mcmcp.materials import checkpoint_fitness, fit_materials, need_faces, open_faces, open_model


class Refused(Exception):
    """A command that cannot run as given; the message says why and what to do instead."""


def log(line: str) -> None:
    print(line, flush=True)


def warn(line: str) -> None:
    print(f"WARNING: {line}", file=sys.stderr, flush=True)


def _check_resumed_inputs(store, loaded, faces_hash, accept: bool) -> bool:
    """Refuse a resume whose checkpoint or face store changed (both hashes named), unless
    `accept`; True if something changed (and was accepted)."""
    meta = store.metadata
    last = (meta.get("runs") or [{}])[-1]
    changed = []
    for name, now, path in (("checkpoint", loaded.sha256, loaded.path),
                            ("faces", faces_hash, meta.get("config", {}).get("model", {})
                             .get("faces"))):
        before = last.get(f"{name}_sha256", meta.get(f"{name}_sha256"))
        if before is not None and now != before:
            changed.append(f"{name} {path}: sha256 was {before}, is now {now}")
    if loaded.config.latent_dim != store.d:
        raise Refused(f"checkpoint {loaded.path} has latent size {loaded.config.latent_dim} but "
                      f"{store.folder} was recorded in d={store.d}; it cannot be resumed with it")
    if changed and not accept:
        raise Refused(f"cannot resume {store.folder}: its inputs changed since it started "
                      f"({'; '.join(changed)}); restore them, or pass --accept-changed-inputs to "
                      "go on with the new ones (recorded in session.json)")
    return bool(changed)


def _inputs(args, cfg, store):
    """The checked model, faces and children: (loaded, faces or None, warnings, inputs changed,
    identities)."""
    from mcmcp.identities import open_identities

    source = args.config or (store.session_path if store is not None else "<config>")
    loaded = open_model(cfg, source)
    warnings = checkpoint_fitness(loaded, source)
    faces = open_faces(cfg, loaded, source) if need_faces(cfg) else None
    identities = open_identities(cfg, loaded, None if faces is None else faces[0], source)
    if faces is not None:
        warnings += faces[3]
    changed = False
    if store is not None:
        changed = _check_resumed_inputs(store, loaded, None if faces is None else faces[1],
                                        args.accept_changed_inputs)
    for line in warnings:
        warn(line)
    return loaded, faces, warnings, changed, identities


def _display(args, cfg, image_size, origin: float):
    """The window (or the headless display) whose session clock counts from `origin`."""
    from mcmcp.session import HeadlessDisplay

    if args.no_window:
        return HeadlessDisplay(log, delay=args.agent_delay, origin=origin)
    try:
        from mcmcp.lab.screen import Screen  # PsychoPy (pyglet) connects to the X server here

        return Screen(cfg.display, image_size, log, args.screenshot, origin=origin)
    except Exception as err:  # no X server, no GL, no psychtoolbox: nothing written yet
        raise Refused(f"the window could not open ({type(err).__name__}: {str(err)[:300]}); run "
                      "under a display (or xvfb-run), or pilot with --agent ... --no-window") \
            from None


def _create(root, participant: str, session: int, d: int, metadata: dict):
    """SessionStore.create, with a full disk reported as what it means at this point."""
    from mcmcp.store import DISK_FULL, SessionStore

    try:
        return SessionStore.create(root, participant, session, d, metadata)
    except OSError as err:
        if err.errno not in DISK_FULL:
            raise
        raise Refused(f"the disk is full ({err.strerror}: {err.filename}); the session was not "
                      "created and nothing was left behind: free some space and run the same "
                      "command again") from None


def _shared_source(args, cfg, d: int, participant: str, session: int, centroids, saved):
    """The chain source of an across-participant design (`mcmcp.shared.SharedChains` over the
    --chain-store) and, on --resume, the rows of this session the store committed that the
    crash kept out of its file (the answer commits to the store first)."""
    from mcmcp.chainstore import ChainStore
    from mcmcp.shared import SharedChains

    url = args.chain_store or f"sqlite:///{Path(args.out).resolve() / 'shared_chains.sqlite'}"
    try:
        chains = ChainStore(url)
    except ValueError as err:
        raise Refused(f"--chain-store: {err}") from None
    # a lab computer waits for a held chain to come back (at most one lease) before giving up
    source = SharedChains(chains, cfg, d, participant, session, centroids,
                          patience=cfg.chains.lease_seconds + 5.0)
    recovered = [] if saved is None else chains.session_rows(cfg.name, participant, session,
                                                             len(saved))
    return source, recovered


def rows_frame(rows: list[dict], d: int):
    """Schema rows -> a DataFrame typed like `SessionStore.read_rows`."""
    import pandas as pd  # here, not at the top: `mcmcp.run --help` imports nothing heavy

    from mcmcp import schema

    frame = pd.DataFrame(rows, columns=schema.header(d), dtype=object)
    return frame.astype(schema.pandas_dtypes(d))


def run_lab_session(args, cfg, participant: str, session: int, store) -> int:
    """Everything after the command is known to be sound: inputs, then files, then the run."""
    import os
    import platform
    import time
    from datetime import datetime, timezone

    import torch

    from mcmcp.config import config_to_dict
    from mcmcp.engine import Engine
    from mcmcp.identities import assignment
    from mcmcp.render import Renderer
    from mcmcp.session import run_session
    from mcmcp.store import utc_now, versions

    torch.set_num_threads(1)  # tiny decoder: one thread keeps latency flat next to the window
    loaded, faces, warnings, changed, identities = _inputs(args, cfg, store)
    gates, centroids, agent = fit_materials(cfg, loaded, faces, identities)
    agent_name = agent.name if agent is not None else "human"
    d = loaded.config.latent_dim
    saved = store.read_rows() if store is not None else None
    source, recovered = None, []
    if cfg.chains.across_participants:
        source, recovered = _shared_source(args, cfg, d, participant, session, centroids, saved)
        if store is None and source.full():  # a new session would have nothing to do
            raise Refused(f"study {cfg.name!r} is full: every chain in {source.store.url} has "
                          "reached trials.per_chain, so it needs no more participants; no "
                          "session was started")
        if recovered:
            saved = rows_frame([*saved.to_dict("records"), *recovered], d)
    try:
        children = assignment(cfg, participant, identities.default)
        engine = Engine(cfg, d, participant, session, gates, centroids, agent_name, saved,
                        children, source)
    except ValueError as err:  # saved rows that do not fit the schedule, a rotated order...
        raise Refused(str(err)) from None

    # The session clock counts from the session's first run; a resumed run goes on from there.
    origin = time.time()
    if store is not None:
        first = store.metadata.get("clock_origin") or store.metadata.get("start_time")
        origin = datetime.fromisoformat(first).timestamp()
    display = _display(args, cfg, loaded.config.image_size, origin)
    try:
        window = None if args.no_window else ("fullscreen" if cfg.display.fullscreen
                                              else "windowed")
        run_info = {
            "started": utc_now(), "clock_at_start": round(display.clock(), 6),
            "pid": os.getpid(), "host": platform.node(), "window": window,
            "refresh_rate": display.refresh_rate, "agent": agent_name,
            "checkpoint_sha256": loaded.sha256, "faces_sha256": None if faces is None else faces[1],
            "accepted_changed_inputs": changed, "warnings": warnings, "versions": versions(),
        }
        if store is None:
            store = _create(args.out, participant, session, d, {
                "config": config_to_dict(cfg),
                "checkpoint_sha256": loaded.sha256,
                "faces_sha256": run_info["faces_sha256"],
                "versions": versions(),
                "seeds": engine.seeds(),
                "block_order": list(engine.emotions),
                "identity": {**children.record(), **identities.record()},
                "agent": agent_name,
                "gate": config_to_dict(cfg)["gate"],
                "window": window,
                "refresh_rate": display.refresh_rate,
                "clock_origin": datetime.fromtimestamp(origin, timezone.utc).isoformat(),
                **({} if source is None else {"chain_store": source.store.url}),
                "runs": [{"run": 1, **run_info}],
            })
        else:
            latest = {} if args.no_window else {"refresh_rate": display.refresh_rate}
            store.begin_run({"run": len(store.metadata.get("runs", [])) + 1, **run_info},
                            versions=versions(), **latest)
            if recovered:
                store.append_many(recovered)
                log(f"{len(recovered)} row(s) the chain store committed before the crash "
                    "were added to the session's file")
        engine.stamp(run=store.run, date=store.metadata.get("date"),
                     frame_rate=display.refresh_rate)
        log(f"session {store.folder}: {len(engine.schedule)} shown trials, "
             f"{engine.next_index} done; blocks {', '.join(engine.emotions)}")
        status, error = "error", None
        try:
            status = run_session(cfg, engine, store, display,
                                 Renderer(loaded.model, identities=identities), agent, log)
        except KeyboardInterrupt:
            status = "aborted"
        except OSError as err:  # a full disk: one line from main(), the status recorded here
            error = f"{err.strerror}: {err.filename}"
            raise
        finally:
            end = {} if args.no_window else {"frame_timing": display.frame_stats()}
            end.update(rows=engine.n_rows, shown_trials=engine.next_index - len(engine.pending))
            store.metadata["runs"][-1].update(ended=utc_now(), status=status)
            try:
                store.finish(status=status, **({"error": error} if error else {}), **end)
            except OSError as err:
                warn(f"could not record the session's end in {store.session_path} "
                      f"({err.strerror})")
    finally:
        if not args.no_window:
            display.close()
    log(_summary(status, store))
    return 0


def _summary(status: str, store) -> str:
    """The closing line: where the data are and the response-to-next-onset gap."""
    import statistics

    gaps = store.read_rows()["gap"].dropna().to_numpy(dtype=float)
    summary = f"{status}: {store.trials_path}"
    if len(gaps):
        summary += (f"; gap response->next onset median {statistics.median(gaps) * 1e3:.1f} ms, "
                    f"worst {max(gaps) * 1e3:.1f} ms")
    return summary
