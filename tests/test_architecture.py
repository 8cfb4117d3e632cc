"""The import rules of docs/architecture.md, read from the source (an AST walk, nothing imported).

- no import circle among the modules of `mcmcp`, `vae` and `analysis` (imports inside functions
  count: a lazy import is still an arrow);
- `mcmcp.sampling` imports nothing else of `mcmcp`; the session core (the modules at the top of
  `mcmcp` that are not commands) imports no wing, no command and no `analysis`;
- a wing (`mcmcp.lab`, `mcmcp.online`, `mcmcp.sim`) never imports another wing or a command;
- `analysis` imports neither the lab nor the online wing nor a command; the online wing's one way
  into `analysis` is `mcmcp.online.monitor`;
- `vae` imports neither `mcmcp` nor `analysis`; the face generator (`vae.procedural`) imports only
  `vae.faceset` and `vae.labels` of `vae`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("mcmcp", "vae", "analysis")
COMMANDS = {f"mcmcp.{name}" for name in ("run", "simulate", "serve", "export", "plan", "demo",
                                          "links")}
WINGS = ("mcmcp.lab", "mcmcp.online", "mcmcp.sim")


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph(root: Path) -> dict[str, set[str]]:
    """module -> the project modules it imports (anywhere in the file), for every module of
    `PACKAGES` under `root`. `from pkg import name` counts as importing `pkg.name` when that is a
    module, else `pkg`."""
    files = {module_name(p, root): p for pkg in PACKAGES for p in (root / pkg).rglob("*.py")}
    graph = {}
    for name, path in files.items():
        targets = set()
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                    + ([base] if base else []))
                found = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base
                         for a in node.names]
            else:
                continue
            for target in found:
                while target and target not in files:  # `import a.b.c` of a non-module name
                    target = target.rpartition(".")[0]
                if target and target != name:
                    targets.add(target)
        graph[name] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), each as a sorted list."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def layer(module: str) -> str:
    """sampling | core | command | lab | online | sim | vae | procedural | analysis"""
    if module in COMMANDS:
        return "command"
    for wing in WINGS:
        if module == wing or module.startswith(wing + "."):
            return wing.split(".")[1]
    if module == "mcmcp.sampling" or module.startswith("mcmcp.sampling."):
        return "sampling"
    if module.startswith("vae.procedural"):
        return "procedural"
    return {"mcmcp": "core", "vae": "vae", "analysis": "analysis"}[module.split(".")[0]]


ALLOWED = {  # layer -> the layers it may import
    "sampling": {"sampling", "vae"},
    "core": {"core", "sampling", "vae"},
    "lab": {"lab", "core", "sampling", "vae"},
    "online": {"online", "core", "sampling", "vae", "analysis"},  # analysis: monitor only
    "sim": {"sim", "core", "sampling", "vae"},
    "analysis": {"analysis", "core", "sampling", "sim", "vae"},
    "vae": {"vae", "procedural"},
    "procedural": {"procedural"},
    "command": {"command", "core", "sampling", "lab", "online", "sim", "vae", "procedural",
                "analysis"},
}
PROCEDURAL_MAY_USE = {"vae.faceset", "vae.labels"}


def violations(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for module, targets in sorted(graph.items()):
        here = layer(module)
        for target in sorted(targets):
            there = layer(target)
            if here == "procedural" and there == "vae" and target in PROCEDURAL_MAY_USE:
                continue
            if there == "command" and here != "command":
                bad.append(f"{module} ({here}) imports the command {target}")
            elif there not in ALLOWED[here]:
                bad.append(f"{module} ({here}) imports {target} ({there})")
            elif here == "online" and there == "analysis" and module != "mcmcp.online.monitor":
                bad.append(f"{module} imports {target}: only mcmcp.online.monitor may use analysis")
    return bad


def test_no_import_circles():
    assert cycles(import_graph(ROOT)) == []


def test_arrows_run_down():
    assert violations(import_graph(ROOT)) == []


def test_every_command_and_wing_exists():
    """The rules name real modules: a renamed wing would make them vacuous."""
    graph = import_graph(ROOT)
    for name in (*COMMANDS, *WINGS, "mcmcp.sampling", "vae.procedural", "mcmcp.online.monitor"):
        assert name in graph, name
    assert "analysis.diagnostics" in graph["mcmcp.online.monitor"]


@pytest.mark.parametrize("source, problem", [
    ({"mcmcp/engine.py": "from mcmcp.identities import Assignment\n",
      "mcmcp/identities.py": "def f():\n    from mcmcp.engine import Engine\n"}, "circle"),
    ({"mcmcp/sampling/chain.py": "from mcmcp.engine import Engine\n", "mcmcp/engine.py": ""},
     "sampling imports core"),
    ({"mcmcp/store.py": "import analysis.load\n", "analysis/load.py": ""}, "core imports analysis"),
    ({"mcmcp/lab/screen.py": "from mcmcp.online.app import create_app\n",
      "mcmcp/online/app.py": ""}, "wing imports wing"),
    ({"mcmcp/online/app.py": "from analysis import diagnostics\n",
      "analysis/diagnostics.py": ""}, "online outside monitor imports analysis"),
    ({"vae/model.py": "from mcmcp.sampling import sphere\n", "mcmcp/sampling/sphere.py": ""},
     "vae imports mcmcp"),
    ({"mcmcp/engine.py": "from mcmcp.run import main\n", "mcmcp/run.py": ""},
     "core imports a command"),
])
def test_the_rules_catch(tmp_path, source, problem):
    """Each rule fails on a tree made to break it (so the two tests above can fail)."""
    for pkg in PACKAGES:
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
    for rel, text in source.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.parent / "__init__.py").touch()
        path.write_text(text)
    graph = import_graph(tmp_path)
    if problem == "circle":
        assert cycles(graph) == [["mcmcp.engine", "mcmcp.identities"]]
    else:
        assert len(violations(graph)) == 1, violations(graph)
