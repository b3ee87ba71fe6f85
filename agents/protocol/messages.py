"""Typed, frozen messages: one class per performative (wire format v1).

Theory of operation
-------------------
A :class:`Message` is what an agent receives *after* the envelope codec
(:mod:`agents.protocol.envelope`) has verified the signature, the replay window and
the sender's role.  Its ``body`` is one of the body classes below, chosen by
the header's ``type``.  Agents build only bodies; the runtime adds the
header (sender, epoch, seq, ts, id) when it seals the envelope.

Each body class lists its wire fields in declaration order; ``from_wire``
(generated per class) checks presence, primitive type and finiteness of
each field and rejects keys it does not know — a v1 peer sends exactly the
documented fields, optional ones may be omitted.  Generic ``dict`` /
``list`` fields may only contain msgpack primitives — the codec enforces
depth, container sizes and string-only map keys before we get here.

``from_wire`` is the reference validator.  The receive path first tries a
faster one, ``WIRE_DECODERS[type]``: msgspec decodes the body bytes straight
into the same class, and the result counts only if re-encoding it gives back
exactly the bytes received (so no key was unknown, missing or repeated and
every float field arrived as a float) and every float field is finite.
Anything else goes to ``from_wire``, which accepts or rejects it as before;
see ``_compile_wire_decoder``.

docs/PROTOCOL.md is generated from the same field tables
(``python -m agents.protocol.messages`` prints them) so the two cannot drift.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import msgspec
from msgspec import field

from security.errors import Malformed

_MISSING = object()


class Body(msgspec.Struct, frozen=True):
    """Base of every message body.  Subclasses are frozen msgspec Structs.

    To agents a body is what a frozen dataclass was (keyword or positional
    construction, attributes, equality, repr, immutability); msgspec builds
    and encodes Structs in C, which the receive path needs (ADR "msgspec").
    """

    TYPE: ClassVar[str] = ""
    _spec: ClassVar[tuple[tuple[str, tuple[type, ...], Any], ...]] = ()
    _generic: ClassVar[tuple[str, ...]] = ()   # the list/dict fields, in wire order

    def to_wire(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name, _, _ in self._spec}

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> Body:
        """Build the body from a decoded map; replaced per class by compiled code."""
        raise NotImplementedError


_WIRE_TYPES: dict[Any, tuple[type, ...]] = {
    str: (str,), int: (int,), float: (float, int), bool: (bool,), bytes: (bytes,),
    list: (list,), dict: (dict,),
}

REGISTRY: dict[str, type[Body]] = {}

WIRE_DECODERS: dict[str, Callable[[Any], Body | None]] = {}
"""Per wire ``type``: body bytes → the body if they are its canonical encoding, else ``None``."""


def _compile_from_wire(cls: type[Body]):  # noqa: ANN202
    """Generate a straight-line validator for ``cls`` (as dataclasses does for __init__).

    The generic loop cost ~1.8 µs per message; the generated code about half
    that, and the receive path's budget is a few microseconds in total.
    Unknown keys are rejected: a v1 peer sends exactly the documented fields
    (optional ones may be omitted).
    """
    ns: dict[str, Any] = {"cls": cls, "Malformed": Malformed, "MISSING": _MISSING,
                          "isfinite": math.isfinite,
                          "ALLOWED": frozenset(n for n, _, _ in cls._spec)}
    lines = ["def from_wire(cls_, data):",
             "    if len(data) > %d or not data.keys() <= ALLOWED:" % len(cls._spec),
             "        extra = sorted(map(repr, set(data) - ALLOWED))",
             "        raise Malformed(f'unknown body field(s) {extra}', msg_type=cls.TYPE)"]
    args = []
    for i, (name, types, default) in enumerate(cls._spec):
        ns[f"T{i}"] = types
        ns[f"D{i}"] = default
        var = f"v{i}"
        args.append(var)
        lines.append(f"    {var} = data.get({name!r}, MISSING)")
        lines.append(f"    if {var} is MISSING:")
        if default is _MISSING:
            lines.append(f"        raise Malformed(\"body field '{name}' is missing\", msg_type=cls.TYPE)")
        elif isinstance(default, (dict, list)):
            lines.append(f"        {var} = type(D{i})()")
        else:
            lines.append(f"        {var} = D{i}")
        bool_ok = bool in types
        check = f"not isinstance({var}, T{i})" + ("" if bool_ok else f" or {var}.__class__ is bool")
        if float in types:   # NaN and infinities are never meaningful times or costs
            check += f" or ({var}.__class__ is float and not isfinite({var}))"
        want = "/".join(t.__name__ for t in types)
        lines.append(f"    elif {check}:")
        lines.append(f"        raise Malformed(f\"body field '{name}' must be {want}, "
                     f"got {{type({var}).__name__}}\", msg_type=cls.TYPE)")
    lines.append(f"    return cls({', '.join(args)})")
    exec("\n".join(lines), ns)  # noqa: S102 - generated from our own field table
    return ns["from_wire"]


def _no_ext(code: int, data: memoryview) -> Any:
    raise ValueError("ext types are not allowed")   # the reference path names the reason


_encode = msgspec.msgpack.Encoder().encode


def _compile_wire_decoder(cls: type[Body]) -> Callable[[Any], Body | None]:
    """A msgspec fast path for ``cls`` that accepts only what ``from_wire`` accepts.

    msgspec builds the body in C (types checked, bool is not int), but it
    keeps the last of repeated keys, ignores unknown ones, fills in omitted
    fields, turns an int into a float and lets NaN through.  Re-encoding the result and comparing it with the bytes
    received rules out all but the last: our encoder writes every field once,
    in declaration order, floats as float64.  So a body that passes is the
    canonical encoding of a value ``from_wire`` would have built equal, and
    the generated ``isfinite`` test covers NaN and infinities.  Whatever
    fails here (including an honest peer that omits optional fields or puts
    an int in a float field) returns ``None`` and is decided by the
    reference validator, with its exact error text.  Generic list/dict
    contents are still the codec's to check (``cls._generic``).
    """
    floats = [name for name, types, _ in cls._spec if float in types]
    ns: dict[str, Any] = {"decode": msgspec.msgpack.Decoder(cls, ext_hook=_no_ext).decode,
                          "encode": _encode, "isfinite": math.isfinite}
    finite = "".join(f" and isfinite(b.{name})" for name in floats)
    src = ("def wire_decoder(raw):\n"
           "    try:\n"
           "        b = decode(raw)\n"
           "    except Exception:\n"
           "        return None\n"
           f"    return b if encode(b) == raw{finite} else None\n")
    exec(src, ns)  # noqa: S102 - generated from our own field table
    return ns["wire_decoder"]


def message(type_name: str):  # noqa: ANN201 - decorator
    """Register a body class under its wire ``type`` and compile its field table."""

    def wrap(cls: type[Body]) -> type[Body]:
        spec = []
        for f in msgspec.structs.fields(cls):
            hint = f.type
            base = getattr(hint, "__origin__", hint)
            if base not in _WIRE_TYPES:
                raise TypeError(f"{cls.__name__}.{f.name}: unsupported wire type {hint}")
            if f.default is not msgspec.NODEFAULT:
                default: Any = f.default
            elif f.default_factory is not msgspec.NODEFAULT:
                default = f.default_factory()
            else:
                default = _MISSING
            spec.append((f.name, _WIRE_TYPES[base], default))
        cls.TYPE = type_name
        cls._spec = tuple(spec)
        cls._generic = tuple(name for name, types, _ in spec if types[0] in (list, dict))
        cls.from_wire = classmethod(_compile_from_wire(cls))  # type: ignore[method-assign,assignment]
        REGISTRY[type_name] = cls
        WIRE_DECODERS[type_name] = _compile_wire_decoder(cls)
        return cls

    return wrap


# -- contract net: calls, bids, awards ---------------------------------------------

@message("cfp")
class CallForProposals(Body, frozen=True):
    """An order asks capable resources to bid for one task (operation or transport)."""

    task: str                 # idempotency key: "ORDER/OP_INDEX" or "ORDER/OP_INDEX/move"
    order: str
    kind: str                 # "operation" | "transport"
    capability: str           # capability name; "transport" for moves
    op: str                   # operation name from the routing
    quantity: int
    earliest_start_at: float
    due_at: float
    reply_by_at: float        # proposals arriving later are ignored
    origin: str = ""          # location of the parts now
    destination: str = ""     # transport only: where the parts must go
    attempt: int = 0          # re-negotiation round of this task (0 = first)
    priority: int = 1         # the order's priority (higher = more urgent)
    work_remaining_s: float = 0.0   # the order's remaining processing, this op included
    #: the latest finish that keeps the caller's plan (a rehearsed, energy-aware order's
    #: planned call: its next operation's planned start, or the plan's end); 0 = none.  A
    #: machine may run the task later within it when that is cheaper (ADR 97)
    latest_finish_at: float = 0.0


@message("propose")
class Proposal(Body, frozen=True):
    """A resource's bid: when it could do the task and at what cost."""

    task: str
    kind: str                 # must match the sender's role: machine→operation, robot→transport
    start_at: float
    finish_at: float
    hold_until_at: float      # the tentative reservation lapses after this
    cost: dict = field(default_factory=dict)   # queue_s, setup_s, processing_s, transport_s, energy_kwh


@message("refuse")
class Refusal(Body, frozen=True):
    """A resource declines to bid (busy, down, incapable); a down one says when it expects
    to be back (``repair_at``, for the order's escalation policy)."""

    task: str
    reason: str = ""
    repair_at: float = 0.0    # a down resource: when it expects to be back (0 = unknown)


@message("accept")
class Award(Body, frozen=True):
    """The order awards the task to one bidder: the start of a lease."""

    task: str
    award_epoch: int          # increases on every re-award; fences stale winners
    lease_s: float            # the winner must renew within this many seconds
    start_at: float = 0.0


@message("reject")
class Rejection(Body, frozen=True):
    """The order turns a proposal down; its reservation is released."""

    task: str


@message("confirm")
class Confirmation(Body, frozen=True):
    """The winner takes the lease (or declines it with ok=False)."""

    task: str
    award_epoch: int
    ok: bool = True
    reason: str = ""


@message("ready")
class Ready(Body, frozen=True):
    """The order tells the winner that the parts for the task are at its location."""

    task: str
    award_epoch: int


@message("inform_done")
class Done(Body, frozen=True):
    """The task finished in the plant."""

    task: str
    award_epoch: int
    started_at: float
    finished_at: float
    quality: str = "ok"       # "ok" | "scrap"
    location: str = ""        # where the parts are now


@message("failure")
class Failure(Body, frozen=True):
    """The task could not be completed (fault, abort); the order re-negotiates.

    ``retry_at`` (optional): do not call for proposals before this time (the
    plant says the task is done or in progress elsewhere: a stale winner is
    about to report).  ``repair_at`` (optional): when the faulted resource
    expects to be back, for the ``wait_for_repair`` policy.
    """

    task: str
    award_epoch: int
    reason: str
    retry_at: float = 0.0
    repair_at: float = 0.0


@message("cancel")
class Cancel(Body, frozen=True):
    """The order withdraws an award (lease expired, decision, re-route)."""

    task: str
    award_epoch: int
    reason: str = ""


@message("heartbeat")
class Heartbeat(Body, frozen=True):
    """Liveness, and lease renewal for the tasks listed as [task, award_epoch, ready].

    ``ready`` (bool, optional) says whether the resource has received ``ready``
    for that task, so an order can resend one that was lost.
    """

    state: str = "up"         # "up" | "busy" | "down"
    leases: list = field(default_factory=list)


# -- rehearsal: what-if passes before committing (agents/rehearsal.py) ----------------

@message("explore")
class Explore(Body, frozen=True):
    """An order registers its operations for one rehearsal pass at one machine.

    Sent to every machine of the cell (``entries`` may be empty), so a machine
    knows when it has heard from every order.  Each entry is
    ``[position, key, capability, quantity, alternatives, machines, next]``: the operation's
    position in the pass (0 = the first the pass places), the list key the
    machine inserts it by (lower first; ties by order id, then position), and
    how many machines may run it (> 1: the machine waits for ``intend``), which
    they are, and which machines may run the next operation (``[]``: none).
    A 5-item entry (without the last two) is accepted in a keyed pass.

    With ``rule`` set (``SPT``, ``MWKR`` or ``FIFO``) the pass is a non-delay
    dispatch instead, driven by ``baton``: ``key`` is then the entry's static
    priority (``MWKR``: minus the work remaining) and ``ready_at`` is when the
    operation at position 0 may start.
    """

    rehearsal: int            # pass number, from 0
    entries: list = field(default_factory=list)
    rule: str = ""            # "" = serial schedule generation by keys
    ready_at: float = 0.0     # rehearsal time


@message("explore_ready")
class ExploreReady(Body, frozen=True):
    """In rehearsal ``rehearsal``, the operation at ``position`` may start at ``ready_at``.

    Sent by the order — or, with ``order`` set, by the machine that placed the
    order's previous operation when only that machine could run it (one hop
    instead of two; ``explore`` entries name the machines of the next operation).
    """

    rehearsal: int
    position: int
    ready_at: float           # rehearsal time, not the cell's clock
    order: str = ""           # set by a machine sending on the order's behalf


@message("explore_quote")
class ExploreQuote(Body, frozen=True):
    """Where the machine would put the operation: the earliest gap after all lower keys.

    In a dispatch pass it is where the machine *did* put it, and ``bound`` is the
    machine's load of operations only it can run (a makespan bound).
    """

    rehearsal: int
    position: int
    start_at: float           # rehearsal time
    finish_at: float
    bound: float = 0.0


@message("intend")
class Intention(Body, frozen=True):
    """The order's choice among the quotes for a flexible operation."""

    rehearsal: int
    position: int
    chosen: bool


@message("explore_result")
class ExploreResult(Body, frozen=True):
    """An order tells the pass's collector when it finished in a rehearsal pass.

    The collector (the orders take turns, by pass number) sums up all of them in
    one ``explore_result`` to every order, with ``orders`` = how many it covers:
    the latest completion (the makespan), the latest ``at``, the greatest
    ``bound`` and the total ``work_s``.

    ``bound`` is a lower bound on any plan's makespan that the sender knows of
    (its own work, or a machine's load it was told about); 0 = none.
    ``work_s`` is the sender's own work (each operation at its shortest time):
    the cell's total, spread over every machine, bounds the makespan too.
    """

    rehearsal: int
    completion_at: float      # rehearsal time
    at: float = 0.0           # the sender's clock when it finished the pass
    bound: float = 0.0        # rehearsal time
    work_s: float = 0.0
    orders: int = 1


@message("baton")
class Baton(Body, frozen=True):
    """The token of a non-delay dispatch pass (``explore`` with a ``rule``).

    ``table`` maps each machine to its next dispatch ``[start_at, priority...]``
    (``[]``: nothing ready there) and ``free`` each machine to when it is free.
    ``pending`` lists updates not yet applied, each ``[machine, kind, order,
    position, ready_at]``: kind ``init`` (fill in your entry), ``ready`` (that
    operation may start at ``ready_at``) or ``drop`` (another machine took it).
    The baton goes to the first machine with an ``init``, else the first with a
    ``ready`` that could start no later than the least entry, else the least
    entry's machine (ties: machine id), which applies its updates and, if still
    least, dispatches; the rules are in docs/PROTOCOL.md §7.3.
    """

    rehearsal: int
    table: dict = field(default_factory=dict)
    free: dict = field(default_factory=dict)
    pending: list = field(default_factory=list)


# -- escalation ---------------------------------------------------------------------

@message("escalate")
class Escalate(Body, frozen=True):
    """A non-routine case for a human supervisor (docs/PROTOCOL.md §7.2, docs/escalation.md)."""

    escalation: str           # escalation id
    priority: int             # 1 = highest
    cause: str
    consequence: str
    order: str = ""
    resource: str = ""
    options: list = field(default_factory=list)   # [{"id", "label", "effect"}...]
    safe_default: str = ""
    deadline_at: float = 0.0
    context: dict = field(default_factory=dict)


@message("decision")
class Decision(Body, frozen=True):
    """A supervisor's choice, signed by the console, naming the user."""

    escalation: str
    option: str
    user: str
    reason: str = ""


@message("escalation_update")
class EscalationUpdate(Body, frozen=True):
    """The raiser tells the console the condition changed: ``return_to_normal`` (solved
    without a decision, e.g. a machine came back)."""

    escalation: str
    event: str                # "return_to_normal"
    reason: str = ""


# -- plant bridge (remote simulator / equipment) ---------------------------------------

@message("plant_command")
class PlantCommand(Body, frozen=True):
    """An agent's command to its own resource in the plant: start_operation, abort_operation,
    move, set_state, query_state (see §13, remote plant protocol)."""

    command: str
    resource: str
    task: str = ""
    args: dict = field(default_factory=dict)


@message("plant_event")
class PlantEvent(Body, frozen=True):
    """The plant reports to a resource's agent: operation_done, quality_result, fault, repaired,
    arrived, reading, command_refused, state (see §13, remote plant protocol)."""

    event: str
    resource: str
    task: str = ""
    at: float = 0.0
    data: dict = field(default_factory=dict)


# -- power leases: the cell's peak-power cap (agents/energy/, docs/energy.md) --------------

@message("power_request")
class PowerRequest(Body, frozen=True):
    """A machine asks the energy manager for ``kw`` above its idle power to run ``task``
    (award epoch ``award_epoch``) for at most ``hold_s``; resent until granted."""

    task: str
    award_epoch: int
    kw: float
    hold_s: float
    attempt: int = 0          # a new request for the same task after a release: one more


@message("power_grant")
class PowerGrant(Body, frozen=True):
    """The lease for ``task@award_epoch#attempt``: ``kw`` until ``expires_at`` (cell time);
    sent again for a repeated request."""

    task: str
    award_epoch: int
    kw: float
    expires_at: float
    attempt: int = 0


@message("power_release")
class PowerRelease(Body, frozen=True):
    """The machine no longer needs the lease (its operation ended, or it never started)."""

    task: str
    award_epoch: int
    attempt: int = 0


@message("cap_in_force")
class CapInForce(Body, frozen=True):
    """The energy manager tells the plant the peak cap in force: ``cap_kw`` raised by a
    supervisor's decision on ``escalation`` until ``until_at`` (``raised``), or the
    contracted cap again; the plant logs it, so its power headroom follows the raise."""

    cap_kw: float
    raised: bool
    until_at: float = 0.0
    escalation: str = ""


# -- rehearsal with energy (agents/energy/rehearsal.py, docs/energy.md) -------------------

@message("explore_result_priced")
class ExploreResultPriced(ExploreResult, frozen=True):
    """``explore_result`` with the energy cost of the sender's part of the pass.

    Sent instead of ``explore_result`` by energy-aware orders; the collector sums
    ``energy_cost`` as it sums ``work_s``, adds what the gaps between operations on
    each machine cost beyond the machine's floor (from every order's ``slots``:
    idle below the standby break-even, else standby and one wake-up), and every
    order keeps the pass with the least makespan + ``s_per_money`` · energy cost
    (docs/energy.md).
    """

    energy_cost: float = 0.0  # in the tariff's currency, the slots priced at the tariff
    #: the sender's operations in the pass, ``[machine, start_at, finish_at]`` each
    #: (rehearsal time; a backward pass's own), so the collector can price the gaps
    #: between operations on each machine; ``[]`` in the collector's sum
    slots: list = field(default_factory=list)


# -- maintenance windows: a machine and the technician crew (agents/maintenance/) ----------

@message("maint_request")
class MaintRequest(Body, frozen=True):
    """A machine asks the technician crew for a planned-maintenance window of
    ``duration_s`` starting at ``earliest_at`` or later, at the latest by
    ``latest_start_at`` (its estimator's latest safe start); resent until offered."""

    job: str
    earliest_at: float
    latest_start_at: float
    duration_s: float
    part: str = ""
    attempt: int = 0          # a new request for the same job after a release: one more


@message("maint_offer")
class MaintOffer(Body, frozen=True):
    """The crew has booked ``technician`` for ``job#attempt`` from ``start_at``: the lease,
    which ends at ``expires_at`` (cell time) whatever happens; sent again for a repeated
    request.  The machine keeps no work inside the window, or gives it back (maint_done)."""

    job: str
    technician: str
    start_at: float
    expires_at: float
    attempt: int = 0


@message("maint_start")
class MaintStart(Body, frozen=True):
    """The technician is at the machine: the window begins (the machine stops for it)."""

    job: str
    technician: str
    attempt: int = 0


@message("maint_done")
class MaintDone(Body, frozen=True):
    """The machine gives the technician back: ``outcome`` ``done`` (the job ended),
    ``declined`` (not wanted any more) or ``lapsed`` (the technician never came)."""

    job: str
    attempt: int = 0
    outcome: str = "done"


# -- spare parts: a machine and the stores agent (agents/maintenance/stores.py) ------------

@message("part_reserve")
class PartReserve(Body, frozen=True):
    """A machine asks the stores to hold one unit of ``part`` for its maintenance ``job``,
    needed by ``need_by_at`` and held ``hold_s`` past that (or past the unit's arrival, when
    later); resent until answered.  A repeat is the same unit, its hold extended."""

    job: str
    part: str
    need_by_at: float
    hold_s: float


@message("part_reserved")
class PartReserved(Body, frozen=True):
    """Unit ``serial`` of ``part`` is held for ``job``: on the shelf, or due from the
    supplier at ``ready_at`` (no later than the need); the hold ends at ``expires_at``."""

    job: str
    part: str
    serial: str
    ready_at: float
    expires_at: float


@message("part_unavailable")
class PartUnavailable(Body, frozen=True):
    """No unit of ``part`` before the need: ``serial`` is held for ``job`` all the same, due
    from the supplier at ``eta_at``; the hold ends at ``expires_at``."""

    job: str
    part: str
    serial: str
    eta_at: float
    expires_at: float


@message("part_release")
class PartRelease(Body, frozen=True):
    """The machine no longer needs the unit held for ``job`` (the window was cancelled)."""

    job: str


@message("part_consumed")
class PartConsumed(Body, frozen=True):
    """Unit ``serial`` was fitted in ``job`` (or the plant says it is gone): off the books."""

    job: str
    serial: str


@message("part_expedite")
class PartExpedite(Body, frozen=True):
    """A supervisor chose ``expedite_part``: the supplier's fastest delivery of the unit held
    for ``job``, at a cost; answered with ``part_reserved`` or ``part_unavailable``."""

    job: str
@message("maint_repair")
class MaintRepair(Body, frozen=True):
    """A machine that failed asks the technician crew for a corrective repair of about
    ``duration_s`` (the cell file's mean repair time), as soon as a technician can come;
    resent until offered.  The crew answers ``maint_offer``/``maint_start`` as for a
    window and books it ahead of planned windows not yet begun; ``maint_done`` ends it."""

    job: str
    duration_s: float
    part: str = ""
    attempt: int = 0


class Message(msgspec.Struct, frozen=True, gc=False):
    """A verified inbound message: header fields plus a typed body.

    A frozen msgspec ``Struct``, like the bodies: the receive path makes one
    per envelope, and a frozen dataclass's ``__init__`` (one
    ``object.__setattr__`` per field) cost 0.8 µs of it.  ``gc=False``: a
    message holds only strings, numbers and a body of wire primitives, so it
    can be in no reference cycle.
    """

    sender: str
    to: str
    conv: str
    id: bytes
    epoch: int
    seq: int
    ts: float
    body: Body

    @property
    def type(self) -> str:
        return self.body.TYPE


def body_from_wire(type_name: str, data: dict[str, Any]) -> Body:
    cls = REGISTRY.get(type_name)
    if cls is None:
        raise Malformed(f"unknown message type {type_name!r}", msg_type=type_name)
    return cls.from_wire(data)


def field_table() -> str:
    """Markdown tables of every body, for docs/PROTOCOL.md."""
    lines = []
    for name, cls in REGISTRY.items():
        lines.append(f"#### `{name}` — {cls.__name__}\n\n{(cls.__doc__ or '').strip()}\n")
        lines.append("| key | msgpack type | required | default |")
        lines.append("|---|---|---|---|")
        for fname, types, default in cls._spec:
            t = "float or int" if types == (float, int) else {
                str: "str", int: "int", bool: "bool", bytes: "bin", list: "array", dict: "map"}[types[0]]
            req = "yes" if default is _MISSING else "no"
            d = "" if default is _MISSING else f"`{default!r}`"
            lines.append(f"| `{fname}` | {t} | {req} | {d} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(field_table())
