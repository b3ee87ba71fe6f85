"""The pure core imports neither ``zmq`` nor ``asyncio`` (DESIGN §2, STYLE 1).

Each module is imported in a fresh interpreter, which then reports which of
the forbidden modules ended up in ``sys.modules``.  Modules of the pure
layers are found by globbing, so new ones are held to the rule as soon as
they exist.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = ("zmq", "asyncio")
NAMED = ["agents.protocol.envelope", "security.certs", "security.replay", "security.access",
         "security.errors", "security.crypto", "agents.protocol.messages"]
# agents/*.py are the sans-io agents themselves (the runtime lives in agents/runtime/)
PURE_GLOBS = ["agents/*.py", "agents/protocol/*.py", "agents/cell/*.py", "agents/negotiation/*.py",
              "agents/core/*.py",
              "agents/escalation/lifecycle.py", "agents/escalation/console.py",
              "agents/escalation/policy.py", "sim_bridge/plant.py"]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def pure_modules() -> list[str]:
    found = {module_name(p) for pattern in PURE_GLOBS for p in ROOT.glob(pattern)}
    return sorted(set(NAMED) | found)


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


def test_the_globs_find_the_protocol_package() -> None:
    mods = pure_modules()
    assert "agents.protocol.messages" in mods and "agents.protocol" in mods


def test_probe_detects_a_module_that_imports_asyncio() -> None:
    # the check itself must be able to fail
    assert imported_forbidden("agents.runtime.transport") == ["asyncio", "zmq"]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("module", pure_modules())
def test_pure_core_imports_no_zmq_and_no_asyncio(module: str) -> None:
    assert imported_forbidden(module) == [], f"{module} pulls in an I/O layer"
