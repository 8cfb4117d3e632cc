"""--help answers at once (parsed before torch, pandas, PsychoPy or matplotlib are imported) and
every flag of the lab, scale and online-link CLIs says what it does and its default."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "pandas", "h5py", "psychopy", "matplotlib", "PIL", "arviz", "dask",
         "pyarrow")
PROBE = """
import runpy, sys
sys.argv = {argv!r}
try:
    runpy.run_module({module!r}, run_name="__main__")
except SystemExit as e:
    assert e.code in (0, None), e.code
print("IMPORTED", *sorted(m for m in {heavy!r} if m in sys.modules))
"""
CLIS = {"mcmcp.run": ["mcmcp.run"], "vae.data build": ["vae.data", "build"],
        "vae.data info": ["vae.data", "info"], "mcmcp.simulate": ["mcmcp.simulate"],
        "mcmcp.plan": ["mcmcp.plan"], "analysis.report": ["analysis.report"],
        "mcmcp.links": ["mcmcp.links"]}


@pytest.mark.parametrize("name", list(CLIS))
def test_help_imports_nothing_heavy(name):
    argv = CLIS[name] + ["--help"]
    code = PROBE.format(argv=argv, module=argv[0], heavy=HEAVY)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "usage:" in out.stdout  # the help itself was printed
    assert out.stdout.strip().splitlines()[-1] == "IMPORTED", out.stdout[-500:]


def _parser(name: str) -> argparse.ArgumentParser:
    if name in ("mcmcp.run", "mcmcp.links"):
        return __import__(name, fromlist=["build_parser"]).build_parser()
    if name.startswith("vae.data"):
        from vae.data import _parser as data_parser

        sub = next(a for a in data_parser()._actions
                   if isinstance(a, argparse._SubParsersAction))
        return sub.choices[name.split()[1]]
    return __import__(name, fromlist=["_parser"])._parser()


@pytest.mark.parametrize("name", list(CLIS))
def test_every_flag_has_help_with_its_default(name):
    for action in _parser(name)._actions:
        if isinstance(action, argparse._HelpAction) or not action.option_strings:
            continue
        text = action.help or ""
        assert text, f"{name} {action.option_strings[0]} has no help"
        assert "default" in text or "required" in text or action.required, \
            f"{name} {action.option_strings[0]}: no default in {text!r}"
