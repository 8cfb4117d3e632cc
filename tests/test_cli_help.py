"""The lab CLIs answer --help at once (heavy modules come after parsing) and document every flag
with its default."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "pandas", "h5py", "scipy", "psychopy", "matplotlib", "PIL")


@pytest.mark.parametrize("argv", [["mcmcp.run", "--help"], ["vae.data", "build", "--help"],
                                  ["vae.data", "info", "--help"]])
def test_help_imports_nothing_heavy(argv):
    code = ("import runpy, sys\n"
            f"sys.argv = {argv!r}\n"
            "try:\n"
            f"    runpy.run_module({argv[0]!r}, run_name='__main__')\n"
            "except SystemExit as e:\n"
            "    assert e.code in (0, None), e.code\n"
            f"print('HEAVY', sorted(m for m in {HEAVY!r} if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "HEAVY []" in out.stdout, out.stdout[-500:]
    assert "--" in out.stdout  # the help itself was printed


def _parsers():
    from mcmcp.run import build_parser
    from vae.data import _parser

    data = _parser()
    sub = next(a for a in data._actions if isinstance(a, argparse._SubParsersAction))
    return {"mcmcp.run": build_parser(), **{f"vae.data {n}": p for n, p in sub.choices.items()}}


@pytest.mark.parametrize("name", ["mcmcp.run", "vae.data build", "vae.data info"])
def test_every_flag_has_help_with_its_default(name):
    parser = _parsers()[name]
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        text = action.help or ""
        assert "default" in text or "required" in text, (name, action.option_strings, text)
