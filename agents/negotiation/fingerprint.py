"""A strategy's fingerprint: what says which code made a run.

A strategy is *code*, named by a string: the name alone does not tell an
edited plug-in from the one a run was made with.  Its **fingerprint** is the
class's import path, the distribution that provides it and its version, and
the SHA-256 of the source of the class and of each of its bases (a changed
helper method inherited from a base class in the plug-in changes the run
too).  Source is what :func:`inspect.getsource` reads from the file now,
after :func:`linecache.checkcache`, so an edit is seen even by a process
that imported the old module; a class without readable source (built in C,
made in ``__main__`` by ``exec``) has ``source_sha256: null``.

A sweep's run ids hash both sides' fingerprints (ops/experiment/); a run's
report and its decision log's header keep them (``strategies``,
``strategy_code``), so ``replay --check`` can say that a divergence comes
with other strategy code than the recording's.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import linecache
from collections.abc import Mapping
from importlib import metadata
from typing import Any

from agents.negotiation.strategies import StrategyChoice, strategy_class

__all__ = ["run_fingerprints", "strategy_fingerprint"]


@functools.lru_cache(maxsize=1)
def _module_distributions() -> dict[str, list[str]]:
    return dict(metadata.packages_distributions())


def _distribution(cls: type) -> tuple[str | None, str | None]:
    """(distribution name, version) of the installed package that provides ``cls``."""
    top = cls.__module__.split(".", 1)[0]
    for name in _module_distributions().get(top, []):
        try:
            return name, metadata.version(name)
        except metadata.PackageNotFoundError:   # pragma: no cover - a half-removed package
            continue
    return None, None


def _source_sha256(cls: type) -> str | None:
    """SHA-256 of the source of ``cls`` and its bases (object excluded), as on disk now."""
    digest = hashlib.sha256()
    for klass in cls.__mro__:
        if klass is object:
            continue
        try:
            path = inspect.getsourcefile(klass)
            if path:
                linecache.checkcache(path)
            source = inspect.getsource(klass)
        except (OSError, TypeError):
            if klass is cls:
                return None
            continue
        digest.update(f"{klass.__module__}:{klass.__qualname__}\n{source}\n".encode())
    return digest.hexdigest()


def strategy_fingerprint(choice: Any, side: str) -> dict[str, Any]:
    """Import path, providing package and version, and source hash of one strategy."""
    cls = strategy_class(choice, side)
    package, version = _distribution(cls)
    name = (choice if isinstance(choice, str) else
            choice.get("name") if isinstance(choice, Mapping) else choice.name)
    return {"name": name,
            "class": f"{cls.__module__}:{cls.__qualname__}",
            "package": package, "version": version, "source_sha256": _source_sha256(cls)}


def run_fingerprints(cfg: Any, order: StrategyChoice | None = None,
                     resource: StrategyChoice | None = None) -> dict[str, dict[str, Any]]:
    """Both sides' fingerprints for a run of ``cfg``: the strategies named (a run's
    override) or the cell's own (``negotiation.strategy``)."""
    chosen = cfg.negotiation.strategy
    return {"order": strategy_fingerprint(order or chosen.order, "order"),
            "resource": strategy_fingerprint(resource or chosen.resource, "resource")}
