"""mcmcp.sampling.seeds: participant keys are stable across processes and streams are independent."""

import subprocess
import sys

import numpy as np

from mcmcp.sampling.seeds import participant_key, stream_rng


def test_participant_key_is_stable_across_processes():
    # Python's hash() is salted per process; the key must not be
    code = "from mcmcp.sampling.seeds import participant_key; print(participant_key('P001'))"
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True, env={"PYTHONHASHSEED": str(s)}).stdout.strip()
            for s in (1, 2)}
    assert outs == {str(participant_key("P001"))}
    assert 0 <= participant_key("P001") < 2**63


def test_participants_get_different_streams_and_same_key_same_stream():
    draws = {p: stream_rng(1, p, 1, 0, 1).random(4) for p in ("P01", "pilot1", "pilot2")}
    assert not np.allclose(draws["P01"], draws["pilot1"])
    assert not np.allclose(draws["pilot1"], draws["pilot2"])
    np.testing.assert_array_equal(stream_rng(1, "P01", 1, 0, 1).random(4), draws["P01"])


def test_every_key_part_changes_the_stream():
    base = stream_rng(7, "P01", 1, 2, 3).random(3)
    for args in ((8, "P01", 1, 2, 3), (7, "P02", 1, 2, 3), (7, "P01", 2, 2, 3),
                 (7, "P01", 1, 3, 3), (7, "P01", 1, 2, 4)):
        assert not np.allclose(stream_rng(*args).random(3), base), args
