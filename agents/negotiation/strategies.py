"""Strategies: how a resource prices a bid, how an order chooses one.

Both sides are plug-ins named in the cell config (``negotiation.strategy``)
by a short name from :data:`ORDER_STRATEGIES` / :data:`RESOURCE_STRATEGIES`,
by the name of an installed entry point in the group ``autocell.strategies``
(``slack_bidding`` ships that way, see :mod:`agents.negotiation.slack`), or
by a dotted path ``package.module:Class``.  A strategy is pure: it sees
the call, the candidate slot or the proposals, and returns a decision.

A strategy with tunables takes them as keyword arguments of its constructor,
and a config names it as ``{name: lowest_cost, params: {energy_s_per_kwh:
600}}``; the type hints of ``__init__`` are what the parameters are checked
against (:mod:`agents.negotiation.params`).  A bare name constructs ``cls()``.

Worked example — an energy-aware order strategy that accepts up to 10 %
later finishes to save energy::

    class EnergyAware(OrderStrategy):
        name = "energy_aware"
        def score(self, cfp, proposal):
            slack = max(cfp.due_at - proposal.finish_at, 0.0)
            energy = proposal.cost.get("energy_kwh", 0.0)
            return proposal.finish_at - 0.1 * min(slack, proposal.finish_at) * (energy > 0) \\
                + 100.0 * energy

Put it in ``mylab/strategies.py`` and write
``negotiation: {strategy: {order: "mylab.strategies:EnergyAware"}}``.
docs/strategies.md walks through a worked example that the tests run.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import math
import numbers
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

from pydantic import Field

from agents.negotiation.params import Problems, check_params, params_model
from agents.protocol.messages import CallForProposals, Proposal
from security.errors import ConfigurationError
from security.untrusted import escape_controls
from security.untrusted import shown as echoed

__all__ = ["ENTRY_POINT_GROUP", "ORDER_STRATEGIES", "RESOURCE_STRATEGIES", "DefaultResource",
           "EarliestFinish", "FirstComeResource", "LowestCost", "OrderStrategy",
           "QUEUE_RULES", "QueueRule", "QueuedTask", "ResourceStrategy", "Slot",
           "StrategyChoice",
           "StrategyError", "choose_of", "dispatch_next", "order_strategy", "params_model",
           "plugin_names", "price_of", "rank_calls", "resource_strategy", "score_of",
           "strategy_class", "strategy_label", "strategy_problems"]


class StrategyError(ConfigurationError):
    """A strategy broke its contract while the cell ran: a method raised, or returned a
    value of the wrong type.  Raised where the call is made, naming the strategy, the
    method, the task and, for an exception, the line of the strategy's code that raised —
    so a plug-in's bug stops the run with one line (exit 2) instead of a livelock of
    malformed bids or a silent fall-back to the tie-breaks."""


def strategy_label(strategy: object) -> str:
    """``package.module:Class`` of a strategy instance: the dotted path a config names."""
    cls = type(strategy)
    return f"{cls.__module__}:{cls.__qualname__}"


def _raised(strategy: object, method: str, subject: str, exc: Exception) -> StrategyError:
    frames = traceback.extract_tb(exc.__traceback__)
    try:
        own = inspect.getsourcefile(type(strategy))
    except (TypeError, OSError):              # a class with no source file (`python -c`)
        own = None
    mine = [f for f in frames if f.filename == own] or frames
    where = f" at {mine[-1].filename}:{mine[-1].lineno}" if mine else ""
    return StrategyError(f"strategy {strategy_label(strategy)}: {method}() raised "
                         f"{type(exc).__name__}: {escape_controls(str(exc))[:200]}{where} "
                         f"({subject})")


def _wrong(strategy: object, method: str, subject: str, got: object,
           expected: str) -> StrategyError:
    return StrategyError(f"strategy {strategy_label(strategy)}: {method}() returned "
                         f"{type(got).__name__} {echoed(got, 80)}; expected {expected} "
                         f"({subject})")


def _real(x: object) -> bool:
    t = type(x)
    return t is float or t is int or (isinstance(x, numbers.Real) and t is not bool)


@dataclass(frozen=True, slots=True)
class Slot:
    """A resource's earliest feasible slot for a call, with its cost terms."""

    start_at: float
    finish_at: float
    queue_s: float
    setup_s: float
    processing_s: float
    transport_s: float
    energy_kwh: float
    energy_cost: float = 0.0     # the tariff's price of the energy (energy-aware machines)


class OrderStrategy:
    """Chooses among proposals.  Lower :meth:`score` wins; ties go to the lower sender id."""

    name = "base"

    def score(self, cfp: CallForProposals, proposal: Proposal) -> float:
        raise NotImplementedError

    def choose(self, cfp: CallForProposals,
               proposals: list[tuple[str, Proposal]]) -> tuple[str, Proposal] | None:
        if not proposals:
            return None
        return min(proposals,
                   key=lambda sp: (score_of(self, cfp, sp[1]), sp[1].finish_at, sp[0]))


class EarliestFinish(OrderStrategy):
    """The default: the proposal that finishes first."""

    name = "earliest_finish"

    def score(self, cfp: CallForProposals, proposal: Proposal) -> float:
        return proposal.finish_at


class LowestCost(OrderStrategy):
    """Cheapest by summed cost terms (seconds of queue+setup+processing+transport).

    ``energy_s_per_kwh``: seconds of those terms one kWh of the proposal's
    energy is worth (default 0: energy is ignored, as before the parameter).
    """

    name = "lowest_cost"

    def __init__(self, *, energy_s_per_kwh: Annotated[float, Field(ge=0)] = 0.0) -> None:
        self.energy_s_per_kwh = energy_s_per_kwh

    def score(self, cfp: CallForProposals, proposal: Proposal) -> float:
        c = proposal.cost
        seconds = float(sum(float(c.get(k, 0.0)) for k in
                            ("queue_s", "setup_s", "processing_s", "transport_s")))
        if self.energy_s_per_kwh:   # not added at 0, so the default scores bit for bit as before
            seconds += self.energy_s_per_kwh * float(c.get("energy_kwh", 0.0))
        return seconds


@dataclass(frozen=True, slots=True)
class QueuedTask:
    """A task in a resource's booked queue (awarded, not started), as a dispatch rule sees it."""

    task: str
    cfp: CallForProposals         # due_at, priority, work_remaining_s of its order
    planned_start_at: float       # the slot it was awarded (the planned order sorts by it)
    duration_s: float
    ready: bool                   # its parts are at the resource


class ResourceStrategy:
    """Decides whether and how a resource bids, and which booked task it runs next.

    :meth:`rank` orders the calls collected in one bidding round (first
    ranked gets the earliest slot); :meth:`price` turns a feasible slot into
    the proposal's cost terms, or returns None to refuse; :meth:`sequence`
    is a dispatch rule over the booked queue, asked each time the resource
    could start a task.
    """

    name = "base"

    def sequence(self, queue: tuple[QueuedTask, ...], now: float) -> Sequence[str] | None:
        """Task ids in the order to run them, or None (the default): the planned order,
        where a ready task may jump ahead only into a gap it fits (agents/resource.py).

        The resource starts the first *ready* task of the returned order (tasks
        left out come after, in planned order): a non-delay dispatch rule.
        """
        return None

    def rank(self, cfp: CallForProposals) -> tuple[Any, ...]:
        # Most work remaining first (MWKR), then priority, then a stable id.
        return (-cfp.work_remaining_s, -cfp.priority, cfp.task)

    def price(self, cfp: CallForProposals, slot: Slot) -> dict[str, float] | None:
        return {"queue_s": slot.queue_s, "setup_s": slot.setup_s,
                "processing_s": slot.processing_s, "transport_s": slot.transport_s,
                "energy_kwh": slot.energy_kwh}


class DefaultResource(ResourceStrategy):
    name = "default"


class FirstComeResource(ResourceStrategy):
    """Serve calls in arrival order (no look-ahead) — a baseline for experiments."""

    name = "first_come"

    def rank(self, cfp: CallForProposals) -> tuple[Any, ...]:
        return ()


#: Dispatch rules of :class:`QueueRule`: the sort key of a booked task (ties: planned order).
QUEUE_RULES: dict[str, Callable[[QueuedTask, float], tuple[float, ...]]] = {
    "fifo": lambda q, now: (q.planned_start_at,),
    "edd": lambda q, now: (q.cfp.due_at,),
    "spt": lambda q, now: (q.duration_s,),
    "mwkr": lambda q, now: (-q.cfp.work_remaining_s,),
    "least_slack": lambda q, now: (q.cfp.due_at - now - q.cfp.work_remaining_s,),
    "priority": lambda q, now: (-q.cfp.priority,),
}


class QueueRule(ResourceStrategy):
    """Bid like the default; run the booked queue by a dispatch rule.

    ``rule``: ``edd`` (earliest due date), ``spt`` (shortest processing
    time), ``mwkr`` (most work remaining), ``least_slack`` (due date − now −
    work remaining), ``priority`` (highest first) or ``fifo`` (strictly the
    planned order, no jumping ahead); ties go to the planned order, then the
    task id, so a run stays reproducible.
    """

    name = "queue_rule"

    def __init__(self, *, rule: Literal["edd", "spt", "mwkr", "least_slack", "priority",
                                        "fifo"] = "edd") -> None:
        self.rule = rule
        self._key = QUEUE_RULES[rule]

    def sequence(self, queue: tuple[QueuedTask, ...], now: float) -> Sequence[str] | None:
        return [q.task for q in sorted(queue, key=lambda q: (*self._key(q, now),
                                                            q.planned_start_at, q.task))]


ORDER_STRATEGIES: dict[str, type[OrderStrategy]] = {
    c.name: c for c in (EarliestFinish, LowestCost)}
RESOURCE_STRATEGIES: dict[str, type[ResourceStrategy]] = {
    c.name: c for c in (DefaultResource, FirstComeResource, QueueRule)}


def score_of(strategy: OrderStrategy, cfp: CallForProposals, proposal: Proposal) -> float:
    """``strategy.score(cfp, proposal)``, checked: a real number, not NaN (a NaN makes the
    lowest score depend on the proposals' order); :class:`StrategyError` otherwise."""
    try:
        score = strategy.score(cfp, proposal)
    except Exception as exc:
        raise _raised(strategy, "score", f"task {cfp.task}", exc) from exc
    if not _real(score) or score != score:
        raise _wrong(strategy, "score", f"task {cfp.task}", score, "a number, not NaN")
    return score


def choose_of(strategy: OrderStrategy, cfp: CallForProposals,
              proposals: list[tuple[str, Proposal]]) -> tuple[str, Proposal] | None:
    """``strategy.choose(cfp, proposals)``, checked: None or one of ``proposals``."""
    try:
        choice = strategy.choose(cfp, proposals)
    except StrategyError:
        raise
    except Exception as exc:
        raise _raised(strategy, "choose", f"task {cfp.task}", exc) from exc
    if choice is not None and choice not in proposals:
        raise _wrong(strategy, "choose", f"task {cfp.task}", choice,
                     "None or one of the (sender, proposal) pairs it was given")
    return choice


def rank_calls(strategy: ResourceStrategy, calls: list[tuple[Any, CallForProposals]]) -> None:
    """Sort one bidding round's ``(message, call)`` pairs by ``strategy.rank``, in place;
    a rank that raises, or keys that do not compare, is a :class:`StrategyError`."""
    def key(mc: tuple[Any, CallForProposals]) -> Any:
        try:
            return strategy.rank(mc[1])
        except Exception as exc:
            raise _raised(strategy, "rank", f"task {mc[1].task}", exc) from exc
    try:
        calls.sort(key=key)
    except TypeError as exc:                  # keys of kinds that do not compare
        raise _raised(strategy, "rank", f"tasks {', '.join(c.task for _, c in calls)}",
                      exc) from exc


def price_of(strategy: ResourceStrategy, cfp: CallForProposals,
             slot: Slot) -> dict[str, float] | None:
    """``strategy.price(cfp, slot)``, checked: None (refuse) or cost terms, a mapping of
    names to finite numbers — what a proposal's ``cost`` may hold (docs/PROTOCOL.md)."""
    try:
        cost = strategy.price(cfp, slot)
    except Exception as exc:
        raise _raised(strategy, "price", f"task {cfp.task}", exc) from exc
    if cost is None:
        return None
    if type(cost) is dict:                # the common case: names to finite floats
        for k, v in cost.items():
            if type(v) is not float or type(k) is not str or v - v != 0.0:
                break
        else:
            return cost
    try:
        terms = {k: float(v) for k, v in cost.items()
                 if type(k) is str and _real(v)} if isinstance(cost, Mapping) else None
    except (OverflowError, ValueError, TypeError):
        terms = None
    if terms is None or len(terms) != len(cost) or not all(
            math.isfinite(v) for v in terms.values()):
        raise _wrong(strategy, "price", f"task {cfp.task}", cost,
                     "None or a dict of cost terms, names to finite numbers")
    return terms                          # numpy's numbers, fractions, ints: plain floats


def dispatch_next(strategy: ResourceStrategy, tasks: Mapping[str, Any],
                  pending: Sequence[tuple[float, str]], now: float) -> str | None:
    """The booked task ``strategy``'s dispatch rule starts now, or None: the planned order.

    The resource's one hook call (``tasks``: its tasks by id, ``pending``: the
    committed ones as (planned start, id)).  A strategy that does not override
    :meth:`ResourceStrategy.sequence` costs nothing here and changes nothing.
    """
    if type(strategy).sequence is ResourceStrategy.sequence:
        return None
    queue = tuple(QueuedTask(tid, t.cfp, t.start_at, t.finish_at - t.start_at, t.ready)
                  for _, tid in pending for t in (tasks[tid],))
    def subject() -> str:                 # built only when there is something to say
        return f"{len(queue)} booked task(s) at t={now:.1f} s"

    try:
        order = strategy.sequence(queue, now)
    except Exception as exc:
        raise _raised(strategy, "sequence", subject(), exc) from exc
    if order is None:
        return None
    ids = None if isinstance(order, (str, bytes)) or not isinstance(order, Iterable) \
        else list(order)
    if ids is None or not all(type(t) is str for t in ids):
        raise _wrong(strategy, "sequence", subject(), order, "None or a list of task ids")
    ready = [q.task for q in queue if q.ready]
    ranked = {tid: i for i, tid in enumerate(ids)}
    ready.sort(key=lambda tid: ranked.get(tid, len(ranked)))   # stable: unlisted keep planned order
    return ready[0] if ready else None


_SIDES: dict[str, tuple[dict[str, Any], type]] = {
    "order": (ORDER_STRATEGIES, OrderStrategy), "resource": (RESOURCE_STRATEGIES, ResourceStrategy)}


class _NamedWithParams(Protocol):
    """The config model's ``{name, params}`` form (kept structural: the model sits above)."""

    @property
    def name(self) -> str: ...

    @property
    def params(self) -> Mapping[str, Any]: ...


StrategyChoice = str | Mapping[str, Any] | _NamedWithParams
"""How a strategy is named: ``"slack_bidding"`` or ``{name: ..., params: {...}}``."""


#: Entry-point group of installed strategy plug-ins (``[project.entry-points."autocell.strategies"]``).
ENTRY_POINT_GROUP = "autocell.strategies"


def plugin_names() -> list[str]:
    """Names of the installed strategy plug-ins (entry points of :data:`ENTRY_POINT_GROUP`)."""
    from importlib.metadata import entry_points

    return sorted({ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})


def _entry_point(spec: str) -> Any:
    from importlib.metadata import entry_points

    found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == spec]
    return found[0] if found else None


def _resolve(spec: str, registry: dict[str, Any], base: type) -> type:
    """A built-in name, then an installed entry point, then ``package.module:Class``."""
    if spec in registry:
        return registry[spec]
    if ":" not in spec:
        ep = _entry_point(spec)
        if ep is None:
            plugins = plugin_names()
            installed = f"; installed plug-ins: {', '.join(plugins)}" if plugins else ""
            close = difflib.get_close_matches(spec, [*registry, *plugins], n=1, cutoff=0.6)
            hint = f" (did you mean {echoed(close[0])}?)" if close else ""
            raise ConfigurationError(
                f"unknown strategy {echoed(spec)}{hint}: use one of {', '.join(sorted(registry))}"
                f"{installed}, or a dotted path 'package.module:Class'")
        try:
            cls = ep.load()
        except Exception as exc:   # a broken plug-in is the operator's to fix, not a crash
            raise ConfigurationError(f"cannot load strategy plug-in {spec!r} "
                                     f"({ep.value}): {exc}") from exc
    else:
        module, _, attr = spec.partition(":")
        try:
            cls = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigurationError(f"cannot load strategy {spec!r}: {exc}"
                                     f"{_import_hint(module, exc)}") from exc
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ConfigurationError(f"strategy {spec!r} is not a subclass of {base.__name__}")
    return cls


def _import_hint(module: str, exc: Exception) -> str:
    """Why a plug-in's own package is not found, when it is beside the user: the current
    directory is not on the import path of an installed ``autocell`` command."""
    top = module.split(".")[0]
    missing = exc.name if isinstance(exc, ModuleNotFoundError) else None
    if not missing or not (module == missing or module.startswith(missing + ".")):
        return ""                        # not the plug-in's own module: its own bug
    here = Path.cwd()
    if (here / top).is_dir() or (here / f"{top}.py").is_file():
        return (f" ({top!r} is in the current directory, which is not on the import path: "
                "run with PYTHONPATH=. or install your package with `pip install -e`)")
    return " (set PYTHONPATH to the directory that holds it, or `pip install -e` it)"


def _split(spec: StrategyChoice) -> tuple[str, Mapping[str, Any]]:
    """A bare name, a ``{name, params}`` mapping or the config model of one -> (name, params)."""
    if isinstance(spec, str):
        return spec, {}
    if isinstance(spec, Mapping):
        return spec["name"], spec.get("params") or {}
    return spec.name, spec.params or {}


def _build(cls: type, name: str, params: Mapping[str, Any]) -> Any:
    """``cls(**params)`` once the parameters are valid; a bare name is exactly ``cls()``."""
    kwargs, problems = check_params(cls, name, params)
    if problems:
        raise ConfigurationError("; ".join(
            f"params.{'.'.join(map(str, loc))}: {msg}" if loc else msg for loc, msg in problems))
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:   # the constructor's own checks, e.g. between params
        raise ConfigurationError(f"strategy {name!r} refuses its parameters: {exc}") from exc


def _load(spec: StrategyChoice, registry: dict[str, Any], base: type) -> Any:
    name, params = _split(spec)
    return _build(_resolve(name, registry, base), name, params)


def strategy_class(spec: StrategyChoice, side: str) -> type:
    """The class ``spec`` names for ``side`` (``"order"`` or ``"resource"``), not constructed.

    What a sweep fingerprints (its source and package version go into run
    ids, see ops/experiment/provenance.py); errors as for the loaders.
    """
    registry, base = _SIDES[side]
    return _resolve(_split(spec)[0], registry, base)


def order_strategy(spec: StrategyChoice) -> OrderStrategy:
    """The order strategy named by ``spec``: a name, or ``{name: ..., params: {...}}``."""
    return _load(spec, ORDER_STRATEGIES, OrderStrategy)


def resource_strategy(spec: StrategyChoice) -> ResourceStrategy:
    """The resource strategy named by ``spec``: a name, or ``{name: ..., params: {...}}``."""
    return _load(spec, RESOURCE_STRATEGIES, ResourceStrategy)


def strategy_problems(spec: Any, side: str) -> Problems:
    """Everything wrong with a strategy reference read from a file, for the loaders.

    ``spec`` is raw data (a name or a ``{name, params}`` mapping) for ``side``
    (``"order"`` or ``"resource"``).  Each problem's path is relative to the
    reference: ``()`` or ``("name",)`` for the name, ``("params", key)`` for a
    parameter.  Shapes that are not a name or a mapping are skipped: the
    config model reports those.
    """
    registry, base = _SIDES[side]
    params: Any
    at: tuple[str, ...]
    if isinstance(spec, str):
        name, params, at = spec, {}, ()
    elif isinstance(spec, Mapping) and isinstance(spec.get("name"), str):
        name, params, at = spec["name"], spec.get("params") or {}, ("name",)
        if not isinstance(params, Mapping):
            return []
    else:
        return []
    try:
        cls = _resolve(name, registry, base)
    except ConfigurationError as exc:
        return [(at, str(exc))]
    _, problems = check_params(cls, name, params)
    if problems:
        return [(("params", *loc), msg) for loc, msg in problems]
    try:
        _build(cls, name, params)
    except ConfigurationError as exc:
        return [(("params",) if params else at, str(exc))]
    return []
