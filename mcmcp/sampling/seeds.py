"""Counter-based random streams shared by lab sessions, online sessions and simulations.

Every random process takes its generator from `stream_rng(seed, participant, session, stream,
counter)`: numpy's SeedSequence hashes the whole key, so two keys that differ anywhere give
independent streams. Putting the participant into the key makes start points, schedules, sides
and proposals differ between participants of one config, and keeping the key free of anything
else (how many participants run together, which process runs them, how far a session got) makes
a participant's data the same whether simulated alone, with 99 others or in parallel, and lets a
session resume exactly from its saved rows.
"""

from __future__ import annotations

import hashlib
import re

import numpy as np


def participant_key(participant: str) -> int:
    """A stable 63-bit integer for a participant id: the first 8 bytes of its sha256, halved.

    Python's `hash()` is salted per process, so it cannot be used; sha256 is the same on every
    machine, Python version and run. participant: the id as saved (e.g. 'P001', 'sim001').
    """
    digest = hashlib.sha256(str(participant).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def stream_rng(seed: int, participant: str, session: int, stream: int, counter: int
               ) -> np.random.Generator:
    """The generator of one stream: default_rng([seed, participant_key, session, stream, counter]).

    seed: the experiment's seed (YAML `seed`); stream: a tag naming what the stream is for (the
    caller's constants); counter: which draw of that stream (e.g. the 1-based shown trial).
    """
    return np.random.default_rng(
        [int(seed), participant_key(participant), int(session), int(stream), int(counter)]
    )


def participant_number(participant: str) -> int | None:
    """The number a participant id ends in (P007 -> 7, pilot12 -> 12), None if it has none."""
    match = re.search(r"(\d+)$", participant)
    return None if match is None else int(match.group(1))
