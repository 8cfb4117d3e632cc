"""Every command the README and the docs pages show is one its CLI accepts: each
`.venv/bin/python -m <module> ...` line of a fenced code block is parsed by the module's own
argument parser (the run stops right after parsing), so a renamed or removed flag fails here
instead of on a lab's first try. Running the commands themselves is the demo's and the
wings' tests' job."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
COMMAND = re.compile(r"^\s*(?:\.venv/bin/)?python -m ([a-z_.]+)(.*)$")
NOT_A_CLI = {"pytest"}

# Runs in one interpreter: each module as __main__, stopped by the first parse that succeeds.
PROBE = """
import argparse, json, runpy, sys

class Parsed(Exception):
    pass

parse = argparse.ArgumentParser.parse_args

def parse_then_stop(self, args=None, namespace=None):
    parse(self, args, namespace)
    raise Parsed

argparse.ArgumentParser.parse_args = parse_then_stop
problems = []
for where, argv in json.load(sys.stdin):
    sys.argv = argv
    try:
        runpy.run_module(argv[0], run_name="__main__", alter_sys=True)
        problems.append(f"{where}: {' '.join(argv)}: ran without parsing its arguments")
    except Parsed:
        pass
    except SystemExit as e:
        problems.append(f"{where}: {' '.join(argv)}: rejected (exit {e.code})")
print(json.dumps(problems))
"""


def documented_commands(pages: list[Path] = PAGES) -> list[tuple[str, list[str]]]:
    """(page:line, argv) of each `python -m` line inside a fenced code block, with its
    backslash continuations joined and its trailing `# comment` dropped; argv[0] is the
    module. Lines that use shell variables or placeholders are left out."""
    found = []
    for page in pages:
        lines = page.read_text().splitlines()
        fenced = False
        i = 0
        while i < len(lines):
            line, start = lines[i], i
            if line.lstrip().startswith("```"):
                fenced = not fenced
            while fenced and line.rstrip().endswith("\\") and i + 1 < len(lines):
                i += 1
                line = line.rstrip()[:-1] + " " + lines[i].strip()
            i += 1
            match = COMMAND.match(line) if fenced else None
            if not match or match.group(1) in NOT_A_CLI or re.search(r"[$<>]", line):
                continue
            words = shlex.split(match.group(2), comments=True)
            name = page.relative_to(ROOT) if page.is_relative_to(ROOT) else page.name
            found.append((f"{name}:{start + 1}", [match.group(1), *words]))
    return found


def rejected(commands: list[tuple[str, list[str]]]) -> list[str]:
    """The commands their parser refuses, one line each."""
    out = subprocess.run([sys.executable, "-c", PROBE], input=json.dumps(commands), cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_every_documented_command_parses():
    commands = documented_commands()
    modules = {argv[0] for _, argv in commands}
    assert {"mcmcp.run", "mcmcp.simulate", "mcmcp.plan", "mcmcp.serve", "analysis.report",
            "vae.data", "vae.train"} <= modules  # the pages were read
    assert rejected(commands) == []


def test_a_wrong_flag_is_caught(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("```bash\n.venv/bin/python -m mcmcp.plan --config experiments/happy.yaml \\\n"
                    "    --precison 5   # a typo\n"
                    ".venv/bin/python -m mcmcp.plan --config experiments/happy.yaml --minutes 30\n"
                    "```\n.venv/bin/python -m mcmcp.plan --not-in-a-block\n")
    commands = documented_commands([page])
    assert [argv for _, argv in commands] == [
        ["mcmcp.plan", "--config", "experiments/happy.yaml", "--precison", "5"],
        ["mcmcp.plan", "--config", "experiments/happy.yaml", "--minutes", "30"]]
    problems = rejected(commands)
    assert len(problems) == 1 and "--precison" in problems[0]
