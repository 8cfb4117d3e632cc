"""Sessions that end, and limits on new ones (the YAML's `online:` keys, `specs.OnlineSpec`).

- Expiry: a session in progress (consent or running) with no request for
  `expire_after_minutes`, or started more than `time_limit_minutes` ago, becomes `abandoned`:
  its answered trials stay (and are exported), it takes no more answers, and it no longer
  counts as unfinished (so it does not block serving a changed design). Sessions are checked
  when they are used, and all of a study's at server start and before every new session.
- Starts: at most `starts_per_minute` calls to start (or resume) a session per client address
  in any 60 s, counted in the database, so all server processes share the limit
  (`Database.allow_start`; behind a proxy the address is the one it forwards: uvicorn trusts
  X-Forwarded-For from 127.0.0.1).
- `max_in_progress`: a new participant is asked to come back later while that many sessions
  are in progress (checked before the session is made; several processes may each let one
  more in at the same moment).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from mcmcp.specs import OnlineSpec

IN_PROGRESS = ("consent", "running")


def _ago(minutes: float | None, now: datetime) -> str | None:
    """The UTC timestamp `minutes` before `now`, in `store.utc_now`'s format (they compare as
    text), or None for a limit that is off."""
    if minutes is None:
        return None
    return (now - timedelta(minutes=minutes)).isoformat(timespec="milliseconds")


def cutoffs(spec: OnlineSpec, now: datetime | None = None) -> tuple[str | None, str | None]:
    """(sessions last active before this are abandoned, sessions started before this are)."""
    now = now or datetime.now(timezone.utc)
    return _ago(spec.expire_after_minutes, now), _ago(spec.time_limit_minutes, now)


def expired(spec: OnlineSpec, created: str, updated: str) -> bool:
    """True if a session in progress with these timestamps has ended."""
    inactive, started = cutoffs(spec)
    return bool((inactive and updated < inactive) or (started and created < started))
