"""Benchmark job-shop instances: parsing, best-known bounds, cell configs.

Theory of operation
-------------------
Every benchmark we measure against is read into one shape, ``Instance``: a
*flexible* job shop in which each ``Operation`` lists the machines that may
run it together with the processing time on each.  A classic job shop
(OR-Library ``.jsp``) is the special case with exactly one option per
operation, so the schedulers, the checker and the cell-config bridge only
ever deal with one model.  Machines are always stored **0-based**; the
``.fjs`` format numbers them from 1 and is shifted on read.

The parsers are strict about structure and lenient about layout: tabs,
trailing whitespace, blank lines and the optional third header number of the
``.fjs`` format are accepted, but a wrong pair count, an out-of-range machine
or a stray token is an ``InstanceError`` whose message starts with
``FILE:LINE:`` so an editor can jump straight to the offending line.  We do
not guess around a broken file: a silently mis-read instance would produce a
plausible but wrong makespan, which is worse than no number at all.

``instance_to_cell_dict`` turns an instance into the plain-dict form of the
cell-config YAML so the same benchmark can drive the agent-based cell.  It
returns builtins only (no pydantic objects), keeping this module independent
of the config model that validates the result.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents.cell.limits import MAX_LEASE_S, MAX_SECONDS
from security.untrusted import UnreadableFile, read_regular_file

__all__ = [
    "FORMAT_EXTENSIONS",
    "SUPPORTED_EXTENSIONS",
    "BksRow",
    "Instance",
    "InstanceError",
    "Operation",
    "instance_path",
    "horizon",
    "instance_to_cell_dict",
    "lease_timing",
    "load_bks",
    "load_instance",
]

#: The largest instance file read, bytes (the largest shipped one is a few KB; 10 000
#: jobs x 100 operations of two-digit numbers fit).
MAX_INSTANCE_BYTES = 16 * 1024 * 1024

#: ``bks.csv`` format column -> instance file extension.
FORMAT_EXTENSIONS: dict[str, str] = {"fjs": ".fjs", "orlib": ".jsp"}
SUPPORTED_EXTENSIONS: tuple[str, ...] = (".fjs", ".jsp")

_BKS_COLUMNS = (
    "instance",
    "format",
    "jobs",
    "machines",
    "lower_bound",
    "best_known_upper",
    "source",
)


class InstanceError(ValueError):
    """A benchmark file is malformed; the message starts with ``FILE:LINE:``.

    LINE is 1-based; 0 means the file as a whole (unreadable, wrong extension).
    """


@dataclass(frozen=True)
class Operation:
    """One step of a job: which machines may run it, and how long each takes.

    ``options`` holds ``(machine, processing_time)`` pairs with 0-based
    machine indices, in file order (the order matters only for tie-breaking
    in callers that choose to depend on it).
    """

    job: int
    index: int
    options: tuple[tuple[int, int], ...]

    @property
    def machines(self) -> tuple[int, ...]:
        return tuple(m for m, _ in self.options)

    @property
    def min_time(self) -> int:
        return min(p for _, p in self.options)

    @property
    def mean_time(self) -> float:
        return sum(p for _, p in self.options) / len(self.options)

    def time_on(self, machine: int) -> int | None:
        """Processing time on ``machine``, or None if it is not eligible."""
        for m, p in self.options:
            if m == machine:
                return p
        return None


@dataclass(frozen=True)
class Instance:
    """A (flexible) job shop: jobs are ordered tuples of operations."""

    name: str
    n_jobs: int
    n_machines: int
    jobs: tuple[tuple[Operation, ...], ...]

    @property
    def n_operations(self) -> int:
        return sum(len(ops) for ops in self.jobs)

    def operations(self) -> Iterator[Operation]:
        """Every operation, job by job, in processing order."""
        for job in self.jobs:
            yield from job


@dataclass(frozen=True)
class BksRow:
    """One row of ``bks.csv``: an instance and its published bounds."""

    instance: str
    format: str
    jobs: int
    machines: int
    lower_bound: int
    best_known_upper: int
    source: str

    @property
    def extension(self) -> str:
        return FORMAT_EXTENSIONS[self.format]


# --------------------------------------------------------------------------
# parsing


def load_instance(path: str | Path) -> Instance:
    """Read a ``.fjs`` or ``.jsp`` file; the instance name is the file stem."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_EXTENSIONS:
        raise InstanceError(
            f"{path}:0: unknown instance extension {path.suffix!r}; supported "
            f"extensions are {', '.join(SUPPORTED_EXTENSIONS)} (rename the file "
            f"to match its format)"
        )
    # through the guard every operator-named file takes: a FIFO or /dev/zero does not hang,
    # and neither a huge file nor bytes that are not UTF-8 get further than this
    try:
        raw = read_regular_file(path, limit=MAX_INSTANCE_BYTES, what="instance file")
    except UnreadableFile as exc:
        raise InstanceError(f"{path}:0: cannot read instance file: {exc.problem}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InstanceError(f"{path}:0: not UTF-8 text ({exc.reason} at byte "
                            f"{exc.start})") from None
    lines = _numbered_lines(text, comment="#" if suffix == ".jsp" else None)
    if suffix == ".fjs":
        return _parse_fjs(path, lines)
    return _parse_jsp(path, lines)


_Line = tuple[int, list[str]]  # (1-based line number, whitespace-split tokens)


def _numbered_lines(text: str, comment: str | None) -> list[_Line]:
    """Non-blank, non-comment lines with their 1-based numbers."""
    out: list[_Line] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or (comment is not None and stripped.startswith(comment)):
            continue
        out.append((number, stripped.split()))
    return out


def _ints(path: Path, number: int, tokens: list[str]) -> list[int]:
    values: list[int] = []
    for position, token in enumerate(tokens, start=1):
        try:
            values.append(int(token))
        except ValueError:
            raise InstanceError(
                f"{path}:{number}: token {position} ({token!r}) is not an integer"
            ) from None
    return values


def _header(path: Path, lines: list[_Line], allow_third: bool) -> tuple[int, int]:
    if not lines:
        raise InstanceError(
            f"{path}:1: file has no header line; expected '<jobs> <machines>'"
        )
    number, tokens = lines[0]
    expected = "2 or 3" if allow_third else "2"
    if len(tokens) not in ((2, 3) if allow_third else (2,)):
        raise InstanceError(
            f"{path}:{number}: header has {len(tokens)} numbers, expected {expected} "
            f"('<jobs> <machines>'{' [avg machines per op]' if allow_third else ''})"
        )
    n_jobs, n_machines = _ints(path, number, tokens[:2])
    if allow_third and len(tokens) == 3:
        try:
            float(tokens[2])  # informational only, but must still be a number
        except ValueError:
            raise InstanceError(
                f"{path}:{number}: third header number {tokens[2]!r} is not a number"
            ) from None
    if n_jobs < 1 or n_machines < 1:
        raise InstanceError(
            f"{path}:{number}: header declares {n_jobs} jobs and {n_machines} "
            f"machines; both must be at least 1"
        )
    return n_jobs, n_machines


def _check_job_count(path: Path, lines: list[_Line], n_jobs: int) -> list[_Line]:
    job_lines = lines[1:]
    if len(job_lines) < n_jobs:
        last = lines[-1][0]
        raise InstanceError(
            f"{path}:{last}: header declares {n_jobs} jobs but the file ends after "
            f"{len(job_lines)} job lines"
        )
    if len(job_lines) > n_jobs:
        extra = job_lines[n_jobs][0]
        raise InstanceError(
            f"{path}:{extra}: unexpected line after the {n_jobs} jobs declared in "
            f"the header (fix the header's job count or remove the line)"
        )
    return job_lines


def _check_machine(
    path: Path, number: int, what: str, machine: int, n_machines: int, base: int
) -> None:
    if not base <= machine < n_machines + base:
        raise InstanceError(
            f"{path}:{number}: {what}: machine {machine} is out of range "
            f"{base}..{n_machines - 1 + base} (the header declares "
            f"{n_machines} machines)"
        )


def _check_time(path: Path, number: int, what: str, time: int) -> None:
    if time < 0:
        raise InstanceError(
            f"{path}:{number}: {what}: processing time {time} is negative"
        )
    if time > MAX_SECONDS:
        digits = str(time)
        shown = digits if len(digits) <= 20 else f"of {len(digits)} digits"
        raise InstanceError(
            f"{path}:{number}: {what}: processing time {shown} is above the cell's limit of "
            f"{MAX_SECONDS:g} s (agents/cell/limits.py)"
        )


def _parse_fjs(path: Path, lines: list[_Line]) -> Instance:
    n_jobs, n_machines = _header(path, lines, allow_third=True)
    jobs: list[tuple[Operation, ...]] = []
    for job, (number, tokens) in enumerate(_check_job_count(path, lines, n_jobs)):
        values = _ints(path, number, tokens)
        n_ops, cursor = values[0], 1
        if n_ops < 1:
            raise InstanceError(
                f"{path}:{number}: job {job + 1} declares {n_ops} operations; "
                f"a job needs at least one"
            )
        ops: list[Operation] = []
        for index in range(n_ops):
            what = f"job {job + 1} operation {index + 1}"
            if cursor >= len(values):
                raise InstanceError(
                    f"{path}:{number}: {what}: line ends before the operation; "
                    f"job declares {n_ops} operations but only {index} are present"
                )
            k = values[cursor]
            pairs = values[cursor + 1 : cursor + 1 + 2 * k]
            if k < 1:
                raise InstanceError(
                    f"{path}:{number}: {what}: declares {k} eligible machines; "
                    f"an operation needs at least one"
                )
            if len(pairs) < 2 * k:
                raise InstanceError(
                    f"{path}:{number}: {what}: declares {k} eligible machines but the "
                    f"line holds only {len(pairs) / 2:g} (machine, time) pairs"
                )
            options: list[tuple[int, int]] = []
            for m, p in zip(pairs[0::2], pairs[1::2], strict=True):
                _check_machine(path, number, what, m, n_machines, base=1)
                _check_time(path, number, what, p)
                if any(m - 1 == seen for seen, _ in options):
                    raise InstanceError(
                        f"{path}:{number}: {what}: machine {m} is listed twice"
                    )
                options.append((m - 1, p))
            ops.append(Operation(job, index, tuple(options)))
            cursor += 1 + 2 * k
        if cursor != len(values):
            raise InstanceError(
                f"{path}:{number}: job {job + 1}: {len(values) - cursor} extra "
                f"token(s) after its {n_ops} declared operations (wrong count of "
                f"pairs or operations)"
            )
        jobs.append(tuple(ops))
    return Instance(path.stem, n_jobs, n_machines, tuple(jobs))


def _parse_jsp(path: Path, lines: list[_Line]) -> Instance:
    n_jobs, n_machines = _header(path, lines, allow_third=False)
    jobs: list[tuple[Operation, ...]] = []
    for job, (number, tokens) in enumerate(_check_job_count(path, lines, n_jobs)):
        values = _ints(path, number, tokens)
        if len(values) != 2 * n_machines:
            raise InstanceError(
                f"{path}:{number}: job {job + 1} has {len(values)} numbers; "
                f"expected {n_machines} (machine, time) pairs = {2 * n_machines} "
                f"numbers, one pair per machine"
            )
        ops: list[Operation] = []
        for index, (m, p) in enumerate(zip(values[0::2], values[1::2], strict=True)):
            what = f"job {job + 1} operation {index + 1}"
            _check_machine(path, number, what, m, n_machines, base=0)
            _check_time(path, number, what, p)
            ops.append(Operation(job, index, ((m, p),)))
        jobs.append(tuple(ops))
    return Instance(path.stem, n_jobs, n_machines, tuple(jobs))


# --------------------------------------------------------------------------
# bounds


def load_bks(csv_path: str | Path) -> list[BksRow]:
    """Read ``bks.csv``; bad rows raise ``InstanceError`` with ``FILE:LINE:``."""
    csv_path = Path(csv_path)
    with csv_path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in _BKS_COLUMNS if c not in (reader.fieldnames or ())]
        if missing:
            raise InstanceError(
                f"{csv_path}:1: missing column(s) {', '.join(missing)}; the header "
                f"must name {', '.join(_BKS_COLUMNS)}"
            )
        rows: list[BksRow] = []
        for record in reader:
            number = reader.line_num
            fmt = (record["format"] or "").strip()
            if fmt not in FORMAT_EXTENSIONS:
                raise InstanceError(
                    f"{csv_path}:{number}: unknown format {fmt!r}; expected one of "
                    f"{', '.join(FORMAT_EXTENSIONS)}"
                )
            numbers: dict[str, int] = {}
            for column in ("jobs", "machines", "lower_bound", "best_known_upper"):
                token = (record[column] or "").strip()
                try:
                    numbers[column] = int(token)
                except ValueError:
                    raise InstanceError(
                        f"{csv_path}:{number}: column {column} ({token!r}) is not "
                        f"an integer"
                    ) from None
            rows.append(
                BksRow(
                    instance=(record["instance"] or "").strip(),
                    format=fmt,
                    source=(record["source"] or "").strip(),
                    **numbers,
                )
            )
    return rows


def instance_path(row: BksRow, directory: str | Path) -> Path:
    """Path of ``row``'s instance file (``fjs`` -> ``.fjs``, ``orlib`` -> ``.jsp``)."""
    return Path(directory) / f"{row.instance}{row.extension}"


# --------------------------------------------------------------------------
# cell config bridge


def _label(prefix: str, number: int, count: int) -> str:
    """1-based id zero-padded to the width of ``count`` so ids sort naturally."""
    return f"{prefix}{number:0{len(str(count))}d}"


def _cell_name(name: str) -> str:
    cleaned = re.sub(r"[^a-z0-9_.-]+", "_", name.lower()).strip("_")
    return cleaned or "instance"


#: Rehearsal passes of an instance cell: 250 (ADR 28) up to :data:`REHEARSAL_FULL_OPS`
#: operations, then fewer, so passes × operations stays at most
#: :data:`REHEARSAL_OP_PASSES`.  A pass costs messages in proportion to the operations
#: (about 5 per operation, ~0.1 ms each): at 250 passes a 200 × 20 job shop needed some
#: 5 million messages before the first award and did not end in 120 s (issue 20, class 2).
REHEARSAL_PASSES = 250
REHEARSAL_FULL_OPS = 500
REHEARSAL_OP_PASSES = REHEARSAL_PASSES * REHEARSAL_FULL_OPS
#: Never fewer than the three dispatch passes (MWKR, SPT, FIFO).
REHEARSAL_MIN_PASSES = 3


def rehearsal_passes(n_operations: int) -> int:
    """The rehearsal passes of an instance with ``n_operations`` operations."""
    if n_operations <= REHEARSAL_FULL_OPS:
        return REHEARSAL_PASSES
    return max(REHEARSAL_MIN_PASSES, REHEARSAL_OP_PASSES // n_operations)


#: Lease timing of an instance cell (benchmark time units): a heartbeat every unit, a
#: lease of 30, up to :data:`REHEARSAL_FULL_OPS` operations.  Above that, the heartbeat
#: interval is the instance's :func:`horizon` / :data:`RENEWALS_PER_HORIZON` (never below
#: 1), the lease 30 intervals.  Why: the rehearsed plan is awarded before anything runs,
#: so every operation holds a lease at its machine from the first award until it ends,
#: and each lease is renewed every interval: heartbeats ~ operations × makespan / interval,
#: and in a job shop the makespan itself grows with the jobs.  At one unit, a 200 × 20
#: job shop (makespan ~10 700) needed some 20 million heartbeats, every one signed and
#: verified; it was those, not the rehearsal, that kept it from finishing (issue 20,
#: class 2).  With the interval scaled, each lease is renewed at most ~500 times, so
#: heartbeats grow with the operations.  A benchmark run has no faults unless
#: ``--faults`` adds them; with faults, detection takes 3 intervals instead of 3 units.
HEARTBEAT_S = 1.0
LEASE_HEARTBEATS = 30
RENEWALS_PER_HORIZON = 500


def horizon(inst: Instance) -> float:
    """A lower bound on the makespan: the longest job or the mean machine load, both at
    each operation's shortest time."""
    work = [sum(op.min_time for op in ops) for ops in inst.jobs]
    return float(max(max(work, default=0), sum(work) / max(1, inst.n_machines)))


def lease_timing(inst: Instance) -> tuple[float, float]:
    """``(heartbeat_interval_s, lease_s)`` of ``inst``'s cell (see :data:`HEARTBEAT_S`)."""
    beat = HEARTBEAT_S
    if inst.n_operations > REHEARSAL_FULL_OPS:
        beat = max(HEARTBEAT_S, horizon(inst) / RENEWALS_PER_HORIZON)
    beat = min(beat, MAX_LEASE_S / LEASE_HEARTBEATS)
    return beat, beat * LEASE_HEARTBEATS


def instance_to_cell_dict(inst: Instance) -> dict[str, Any]:
    """Express ``inst`` as a cell-config dict (the YAML shape, builtins only).

    Every operation becomes its own capability ``J{job}.O{op}`` so the
    per-machine processing times of a flexible operation survive verbatim;
    each job becomes product ``P{job}`` and order ``J{job}`` (quantity 1).
    ``due_at`` is three times the job's minimum total work: informational
    only, but it must lie after the release.  A zero processing time is
    legal in a benchmark but not in a cell (capabilities take > 0 s), so it
    raises ``InstanceError`` here rather than a less specific config error.
    """
    machine_ids = [_label("M", k + 1, inst.n_machines) for k in range(inst.n_machines)]
    capabilities: list[dict[str, int]] = [{} for _ in range(inst.n_machines)]
    products: list[dict[str, Any]] = []
    orders: list[dict[str, Any]] = []
    for job, ops in enumerate(inst.jobs):
        job_id = _label("J", job + 1, inst.n_jobs)
        routing: list[dict[str, str]] = []
        for op in ops:
            capability = f"{job_id}.O{op.index + 1}"
            for machine, time in op.options:
                if time <= 0:
                    raise InstanceError(
                        f"{inst.name}: job {job + 1} operation {op.index + 1} takes "
                        f"{time} on machine {machine + 1}, but cell capabilities need "
                        f"a processing time > 0 s; drop that option or give it a "
                        f"positive time before converting"
                    )
                capabilities[machine][capability] = time
            routing.append({"op": f"O{op.index + 1}", "capability": capability})
        product_id = _label("P", job + 1, inst.n_jobs)
        products.append({"id": product_id, "routing": routing})
        orders.append(
            {
                "id": job_id,
                "product": product_id,
                "quantity": 1,
                "release_at": 0,
                "due_at": max(1, 3 * sum(op.min_time for op in ops)),
                "priority": 1,
            }
        )
    machines = [
        {
            "id": machine_ids[k],
            "location": "floor",
            "capabilities": capabilities[k],
            "setup_s": 0,
            "power_kw": {"idle": 0, "busy": 1},
            "mtbf_s": None,
            "mttr_s": None,
            "scrap_rate": 0,
        }
        for k in range(inst.n_machines)
    ]
    beat_s, lease_s = lease_timing(inst)
    return {
        "cell": _cell_name(inst.name),
        "layout": {
            "locations": [{"id": "floor", "x": 0, "y": 0}],
            "input": None,
            "output": None,
        },
        "machines": machines,
        "robots": [],
        "products": products,
        "orders": orders,
        # Benchmark time units are small integers: negotiate in hundredths of a
        # unit so the contract net's own latency barely shows in the makespan.
        # Rehearse before committing (agents/rehearsal.py): a benchmark is one batch
        # of orders released together, the case rehearsal is made for.
        "negotiation": {"reply_deadline_s": 0.01, "heartbeat_interval_s": beat_s,
                        "lease_s": lease_s,
                        "rehearsal_passes": rehearsal_passes(inst.n_operations),
                        "rehearsal_pass_timeout_s": 0.5},
        "sim": {"seed": 0, "network": {"latency_s": 0.0001}},
    }
