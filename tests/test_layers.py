"""The layers of the code, checked on every module (docs/architecture.md, Layers).

Two checks keep the structure as the document draws it:

* **Import directions.**  Every ``.py`` under ``agents/``, ``security/``,
  ``sim_bridge/`` and ``ops/`` is parsed (not imported), and each of its
  imports — at the top, inside functions, under ``if TYPE_CHECKING:`` — is
  looked up in :data:`ALLOWED`.  An import of a higher floor fails, and so
  does any import cycle between modules; the message names the file, the
  line, the imported module and the two floors.
* **The pure core imports neither ``zmq`` nor ``asyncio``.**  Floors 1 to 4
  (and the embedded plant) are each imported in a fresh interpreter, which
  reports which of the forbidden modules ended up in ``sys.modules`` — so
  what a module pulls in indirectly counts as well.

Both find modules by walking the tree, so a new module is held to the rules
as soon as it exists; only the table below names packages.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

# -- the table (docs/architecture.md, Layers) ---------------------------------------------
# The floors, bottom -> top, and which floors each may import besides its own.  A module
# belongs to the longest floor name that prefixes it: ``agents.protocol.messages`` is on
# ``agents.protocol``, ``agents.order`` on ``agents``.  Only downward imports are allowed.
FLOORS: tuple[str, ...] = (
    "security",          # 1 trust primitives: keys, certificates, crypto, replay guard, access
    "agents.protocol",   # 2 messages, actions, the envelope codec
    "agents.cell",       # 3 the cell and fault models and the config -> core translators
    "agents",            # 4 the sans-io agents, negotiation, the escalation core
    "agents.runtime",    # 5 runner, bus, transports, host, journal, observer
    "sim_bridge",        # 6 plant interface and simulator, virtual-time driver, report, KPIs
    "ops",               # 7 CLI, config loading, supervisor, console, metrics, benches
)
ALLOWED: dict[str, tuple[str, ...]] = {
    "security": (),
    "agents.protocol": ("security",),
    "agents.cell": ("security", "agents.protocol"),
    "agents": ("security", "agents.protocol", "agents.cell"),
    "agents.runtime": ("security", "agents.protocol", "agents.cell", "agents"),
    "sim_bridge": ("security", "agents.protocol", "agents.cell", "agents", "agents.runtime"),
    "ops": ("security", "agents.protocol", "agents.cell", "agents", "agents.runtime",
            "sim_bridge"),
}
# Modules that sit on another floor than their package: the assembly of a cell's agents
# from its model builds machine, robot and order agents, so it stands with them.
FLOOR_OF_MODULE: dict[str, str] = {
    "agents.cell.build": "agents",
}
# The pure core: floors 1 to 4, plus the embedded plant the virtual driver steps.
PURE_FLOORS = ("security", "agents.protocol", "agents.cell", "agents")
PURE_EXTRA = ("sim_bridge.plant",)
FORBIDDEN = ("zmq", "asyncio")

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("agents", "security", "sim_bridge", "ops")


# -- finding modules and their imports -----------------------------------------------------

def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def floor_of(module: str) -> str | None:
    if module in FLOOR_OF_MODULE:
        return FLOOR_OF_MODULE[module]
    best = None
    for floor in FLOORS:
        if (module == floor or module.startswith(floor + ".")) and (
                best is None or len(floor) > len(best)):
            best = floor
    return best


@dataclass(frozen=True)
class Import:
    importer: str       # module name
    path: Path
    line: int
    target: str         # the project module imported (a submodule where one is named)


def imports_of(module: str, path: Path, known: set[str]) -> list[Import]:
    """Every import of a project module in ``path``, wherever it stands in the file."""
    is_package = path.name == "__init__.py"
    out: list[Import] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            # ``from pkg import sub`` imports the submodule; ``from mod import name`` the module
            names = [f"{source}.{a.name}" if f"{source}.{a.name}" in known else source
                     for a in node.names]
        else:
            continue
        for name in dict.fromkeys(names):
            target = name
            while target and target not in known:   # ``import a.b.c`` of a name inside a.b
                target = target.rpartition(".")[0]
            if target and target != module and target.split(".")[0] in PACKAGES:
                out.append(Import(module, path, node.lineno, target))
    return sorted(out, key=lambda i: (i.line, i.target))


def project_imports() -> list[Import]:
    mods = all_modules()
    known = set(mods)
    return [imp for mod, path in mods.items() for imp in imports_of(mod, path, known)]


def upward_imports(imports: list[Import]) -> list[str]:
    problems = []
    for imp in imports:
        src, dst = floor_of(imp.importer), floor_of(imp.target)
        assert src is not None and dst is not None, f"{imp} is on no floor of the table"
        if dst != src and dst not in ALLOWED[src]:
            problems.append(f"{imp.path.relative_to(ROOT)}:{imp.line}: {imp.importer} imports "
                            f"{imp.target} — floor {src} may not import floor {dst}")
    return problems


def import_cycles(imports: list[Import]) -> list[list[str]]:
    """The strongly connected components of the module graph, each as one cycle through it."""
    graph: dict[str, set[str]] = {}
    for imp in imports:
        graph.setdefault(imp.importer, set()).add(imp.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(v: str) -> None:          # Tarjan; the graph is small enough for recursion
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph.get(v, ()):
                components.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_cycle_through(comp, graph) for comp in components]


def _cycle_through(comp: set[str], graph: dict[str, set[str]]) -> list[str]:
    """A shortest cycle from the component's first module back to itself."""
    start = min(comp)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph.get(v, set()) & comp):
                if w == start:
                    return paths[v] + [start]
                if w not in paths:
                    paths[w] = paths[v] + [w]
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no cycle in {comp}")


def _where(imports: list[Import], cycle: list[str]) -> str:
    lines = {(i.importer, i.target): i for i in imports}
    return " -> ".join(f"{a} ({lines[(a, b)].path.relative_to(ROOT)}:{lines[(a, b)].line})"
                       for a, b in zip(cycle, cycle[1:])) + f" -> {cycle[-1]}"


# -- the table itself ---------------------------------------------------------------------

def test_the_table_points_downward_only() -> None:
    assert set(ALLOWED) == set(FLOORS)
    for floor, allowed in ALLOWED.items():
        assert all(FLOORS.index(a) < FLOORS.index(floor) for a in allowed), floor
    assert set(FLOOR_OF_MODULE.values()) <= set(FLOORS)


def test_every_module_is_on_a_floor() -> None:
    mods = all_modules()
    assert "agents.protocol.messages" in mods and "ops.cli" in mods
    assert {m: floor_of(m) for m in mods if floor_of(m) is None} == {}
    assert floor_of("agents.protocol.messages") == "agents.protocol"
    assert floor_of("agents.order") == "agents"
    assert floor_of("agents.runtime.host") == "agents.runtime"
    assert floor_of("agents") == "agents"


def test_the_parser_sees_every_kind_of_import(tmp_path: Path) -> None:
    # the check itself must be able to fail: relative, nested and TYPE_CHECKING imports count
    src = tmp_path / "mod.py"
    src.write_text("from typing import TYPE_CHECKING\n"
                   "from . import b\n"
                   "from .b import thing\n"
                   "if TYPE_CHECKING:\n"
                   "    from ops.cli import main\n"
                   "def f():\n"
                   "    import sim_bridge.virtual as v\n"
                   "import agents.protocol.messages, json\n")
    known = {"agents.escalation.a", "agents.escalation.b", "ops.cli", "sim_bridge.virtual",
             "agents.protocol.messages"}
    found = [(i.line, i.target) for i in imports_of("agents.escalation.a", src, known)]
    assert found == [(2, "agents.escalation.b"), (3, "agents.escalation.b"), (5, "ops.cli"),
                     (7, "sim_bridge.virtual"), (8, "agents.protocol.messages")]
    up = upward_imports([Import("agents.escalation.a", ROOT / "agents/x.py", 5, "ops.cli")])
    assert up == ["agents/x.py:5: agents.escalation.a imports ops.cli — "
                  "floor agents may not import floor ops"]


def test_cycles_are_found_and_reported() -> None:
    p = ROOT / "ops/x.py"
    imps = [Import("ops.a", p, 1, "ops.b"), Import("ops.b", p, 2, "ops.c"),
            Import("ops.c", p, 3, "ops.a"), Import("ops.c", p, 4, "ops.d")]
    assert import_cycles(imps) == [["ops.a", "ops.b", "ops.c", "ops.a"]]
    assert _where(imps, ["ops.a", "ops.b", "ops.c", "ops.a"]) == \
        "ops.a (ops/x.py:1) -> ops.b (ops/x.py:2) -> ops.c (ops/x.py:3) -> ops.a"


# -- the code -----------------------------------------------------------------------------

def test_no_module_imports_a_higher_floor() -> None:
    problems = upward_imports(project_imports())
    assert not problems, (f"{len(problems)} upward import(s) (docs/architecture.md, Layers):\n"
                          + "\n".join(problems))


def test_no_import_cycles() -> None:
    imports = project_imports()
    cycles = import_cycles(imports)
    assert not cycles, (f"{len(cycles)} import cycle(s):\n"
                        + "\n".join(_where(imports, c) for c in cycles))


# -- the pure core ------------------------------------------------------------------------

def pure_modules() -> list[str]:
    return sorted({m for m in all_modules() if floor_of(m) in PURE_FLOORS} | set(PURE_EXTRA))


PROBE = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
print(json.dumps(sorted(m for m in {forbidden!r}
                        if m in sys.modules or any(k.startswith(m + ".") for k in sys.modules))))
""".format(forbidden=FORBIDDEN)


def imported_forbidden(module: str) -> list[str]:
    r = subprocess.run([sys.executable, "-c", PROBE, module], capture_output=True, text=True,
                       timeout=60, cwd=ROOT)
    assert r.returncode == 0, f"importing {module} failed:\n{r.stderr}"
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_the_pure_core_covers_protocol_negotiation_escalation_and_security() -> None:
    mods = pure_modules()
    for m in ("agents.protocol.messages", "agents.protocol", "agents.negotiation.contract_net",
              "agents.escalation.lifecycle", "agents.escalation.console",
              "agents.escalation.policy", "security.replay", "security.certs", "agents.order",
              "sim_bridge.plant"):
        assert m in mods, m
    assert "agents.runtime.console_service" not in mods and "agents.runtime.host" not in mods
    # the envelope codec, wherever it lives
    assert "agents.protocol.envelope" in mods or "agents.protocol.envelope" in mods


def test_probe_detects_a_module_that_imports_asyncio() -> None:
    # the check itself must be able to fail
    assert imported_forbidden("agents.runtime.transport") == ["asyncio", "zmq"]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("module", pure_modules())
def test_pure_core_imports_no_zmq_and_no_asyncio(module: str) -> None:
    assert imported_forbidden(module) == [], f"{module} pulls in an I/O layer"
