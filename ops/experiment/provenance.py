"""What a sweep's results were made with: strategy fingerprints and the provenance manifest.

Theory of operation
-------------------
A run id must change whenever something that decides the run changes.  The
cell's content, the fault scenario and the seed are data and are hashed as
such (:func:`ops.experiment.sweep.expand`); a strategy is *code*, named by a
string, and hashing the name alone let ``--resume`` skip every run after a
plug-in was edited.  So each side's strategy gets a **fingerprint**
(:func:`strategy_fingerprint`): the class's import path, the distribution
that provides it and its version, and the SHA-256 of the source of the class
and of each of its bases (a changed helper method inherited from a base class
in the plug-in changes the run too).  The fingerprints of a point's two
sides, hashed together, are its ``code`` column and part of its run id.

Source is what :func:`inspect.getsource` reads from the file now, after
:func:`linecache.checkcache`, so an edit is seen even by a process that
imported the old module.  A class without readable source (built in C, made
in ``__main__`` by ``exec``) is fingerprinted by its version alone, and the
manifest says ``source_sha256: null``.

The **manifest** (``manifest.json`` in the output directory,
:func:`write_manifest`) records the rest: autocell's version and git commit,
Python and the platform, start and end times of each invocation (``--resume``
appends one), the fingerprints per strategy label, and copies of the sweep
file and of every cell and fault file it used (``provenance/``), with their
SHA-256.  Wall-clock time is read here, in the command, never in the runs.
"""

from __future__ import annotations

import functools
import hashlib
import json
import platform
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from agents.negotiation.fingerprint import strategy_fingerprint

__all__ = ["MANIFEST", "autocell_version", "code_hash", "git_commit", "side_choice",
           "strategy_fingerprint", "utc_now", "write_manifest"]

#: The manifest's file name in a sweep's output directory.
MANIFEST = "manifest.json"


def utc_now() -> str:
    """Wall-clock time for the manifest, ISO 8601 in UTC."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def side_choice(cell_data: dict[str, Any], side: str) -> Any:
    """The strategy a point's cell names for ``side``, or the cell model's default."""
    from agents.cell.model import Strategy

    negotiation = cell_data.get("negotiation")
    strategy = negotiation.get("strategy") if isinstance(negotiation, dict) else None
    if isinstance(strategy, dict) and strategy.get(side) is not None:
        return strategy[side]
    return Strategy.model_fields[side].default


def code_hash(fingerprints: dict[str, dict[str, Any]]) -> str:
    """The ``code`` column: 12 hex digits over both sides' fingerprints."""
    return hashlib.sha256(json.dumps(fingerprints, sort_keys=True).encode()).hexdigest()[:12]


@functools.lru_cache(maxsize=1)
def autocell_version() -> str | None:
    try:
        return metadata.version("autocell")
    except metadata.PackageNotFoundError:   # pragma: no cover - run from a bare checkout
        return None


def git_commit(directory: Path | None = None) -> dict[str, Any]:
    """The commit of autocell's source tree, and whether it has local changes (None: no git)."""
    where = directory or Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "-C", str(where), "rev-parse", "HEAD"], check=True,
                              capture_output=True, text=True, timeout=10).stdout.strip()
        status = subprocess.run(["git", "-C", str(where), "status", "--porcelain",
                                 "--untracked-files=no"], check=True, capture_output=True,
                                text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": head, "dirty": bool(status.strip())}


def _copy(src: Path, dest_dir: Path, index: int, out: Path) -> dict[str, Any]:
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / f"{index}-{src.name}"
    shutil.copyfile(src, dest)
    return {"file": str(src.resolve()), "copy": str(dest.relative_to(out)),
            "sha256": hashlib.sha256(src.read_bytes()).hexdigest()}


def write_manifest(out: Path, sweep: Any, points: list[Any], *, started_at: str,
                   ended_at: str | None, outcome: dict[str, Any]) -> Path:
    """Write ``manifest.json`` and ``provenance/`` copies; earlier invocations are kept.

    Written when a sweep starts (``ended_at: null``, so a killed sweep still has
    one) and again when it ends, which replaces that unfinished entry.
    """
    prov = out / "provenance"
    source = Path(sweep.source)
    files: dict[str, Any] = {"sweep": _copy(source, prov, 0, out) if source.is_file() else None,
                             "cells": [], "faults": []}
    for i, cell in enumerate(sweep.cells):
        files["cells"].append(_copy(sweep._base_dir / cell, prov / "cells", i, out))
    for i, fault in enumerate(f for f in sweep.faults if f):
        files["faults"].append(_copy(sweep._base_dir / fault, prov / "faults", i, out))
    strategies: dict[str, dict[str, Any]] = {}
    for p in points:
        strategies.setdefault(p.strategy, {}).setdefault(p.cell, {"code": p.code,
                                                                   **p.fingerprints})
    path = out / MANIFEST
    previous: list[dict[str, Any]] = []
    if path.exists():
        try:
            previous = json.loads(path.read_text()).get("invocations", [])
        except (json.JSONDecodeError, AttributeError):
            previous = []
    if previous and previous[-1].get("started_at") == started_at \
            and previous[-1].get("ended_at") is None:
        previous = previous[:-1]
    invocation = {"started_at": started_at, "ended_at": ended_at,
                  "argv": list(sys.argv), "autocell_version": autocell_version(),
                  **{k: outcome.get(k) for k in ("points", "ran", "skipped", "stale",
                                                 "failed_total")}}
    manifest = {
        "sweep": sweep.name,
        "autocell": {"version": autocell_version(), **git_commit()},
        "python": {"version": platform.python_version(),
                   "implementation": platform.python_implementation(),
                   "executable": sys.executable},
        "platform": {"system": platform.platform(), "machine": platform.machine()},
        "started_at": started_at, "ended_at": ended_at,
        "strategies": strategies,
        "files": files,
        "invocations": [*previous, invocation],
    }
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False, default=str) + "\n")
    tmp.replace(path)
    return path
