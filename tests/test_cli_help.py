"""--help is fast (parsed before torch, pandas or matplotlib are imported) and every flag of the
scale tools says what it does and its default."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "pandas", "matplotlib", "arviz", "dask", "pyarrow")
PROBE = """
import runpy, sys
sys.argv = [{module!r}, "--help"]
try:
    runpy.run_module({module!r}, run_name="__main__")
except SystemExit:
    pass
print("IMPORTED", *sorted(m for m in {heavy!r} if m in sys.modules))
"""


@pytest.mark.parametrize("module", ["mcmcp.simulate", "mcmcp.plan", "analysis.report"])
def test_help_imports_nothing_heavy(module):
    out = subprocess.run([sys.executable, "-c", PROBE.format(module=module, heavy=HEAVY)],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "usage: python -m " + module in out.stdout
    assert out.stdout.strip().splitlines()[-1] == "IMPORTED"


@pytest.mark.parametrize("module", ["mcmcp.simulate", "mcmcp.plan", "analysis.report"])
def test_every_flag_has_help_with_its_default(module):
    parser = __import__(module, fromlist=["_parser"])._parser()
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction) or not action.option_strings:
            continue
        assert action.help, f"{module} {action.option_strings[0]} has no help"
        if not action.required:
            assert "default" in action.help, f"{module} {action.option_strings[0]}: no default"
