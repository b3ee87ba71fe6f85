"""The ``opcua`` plant backend: machines on OPC UA servers, behind the gateway's fence.

Theory of operation
-------------------
:class:`OpcUaBackend` implements :class:`~sim_bridge.plant_api.Plant` for the
machines whose ``backend`` is ``opcua``.  It lives on the gateway's asyncio
loop (``autocell plant``): the gateway calls it synchronously, it answers at
once and does the OPC UA calls in tasks, reporting what the machines do
through :class:`~sim_bridge.plant_api.PlantEvents` as it happens.

* **One link per endpoint** (:class:`_Link`): machines on one server share a
  session, or with ``sessions: N`` are dealt to N sessions (:func:`session_keys`);
  each session batches the method calls of one turn of the event loop into one
  request (:mod:`.batch`).  A link's task connects (:func:`~sim_bridge.opcua.session.open_session`),
  resolves each machine's nodes through its profile (:mod:`.profiles`:
  ``machinery-jobs`` in :mod:`.jobs`, ``packml`` in :mod:`.packml`, ``nodes`` in
  :mod:`.legacy`), reconciles,
  subscribes, then watches the session: a failed read of the server's state
  is a lost link.  It reconnects with a capped back-off, forever; an error
  that retrying cannot fix (an untrusted certificate, a wrong password) is
  recorded once, with what to do, and retried slowly, since an operator may
  fix it while the cell runs.
* **Grace.** A lost link is not yet a fault: for ``grace_s`` the machine
  keeps its job.  Past it, the machine is reported ``fault`` ("link lost"),
  its job is handed back (``stopped``; the agents re-route it) and kept as an
  *orphan*: on reconnect an orphan still running is aborted and one that
  ended is cleared and recorded (``opcua_late_end``), never reported done —
  its task already belongs to someone else.
* **Reconnect** re-reads the job list before anything else: the current
  job's end while the link was down is reported as ``operation_done`` (the
  ``query_state`` semantics); a job no longer listed is looked up by its
  response (``machinery-jobs``); one the server no longer knows at all (a
  restarted server: it may have ended unseen) is handed back with
  ``command_refused`` ``outcome_unknown``, which the machine agent holds
  and escalates rather than have the work done twice (ADR 72); then, if
  the machine was reported down, ``repaired``.  A start whose answer was lost with the link
  is sent again with the same JobOrderID, which the machine refuses if it
  has it already: nothing is started twice.  A profile whose machine does
  not refuse duplicates (``nodes``) never resends: such a job is handed back
  (``command_refused``), and the gateway's fence alone guards against a
  second run.
* **In doubt.** A start is sent once per command (``sent``); one unanswered
  within the timeout, or whose answer was lost with the link, is *in doubt*
  and settled only by the same JobOrderID sent again — at once, by the
  reconciliation or on reconnect — never by a job list read meanwhile.  A
  re-send the machine refuses is checked against the job list and the job's
  own response: a job the machine ran is followed, never refused (ADR 70).
  One refused all the same (ReturnStatus 3 is also "busy") stays watched
  for ``DOUBT_S``: its first send, still queued, may run yet; it is then
  aborted, or its end recorded (ADR 72).
* **Refusals.** A start the server refuses (a Bad status, or a non-zero
  ISA-95 ReturnStatus) is handed back with ``command_refused``; after
  ``refusals_to_escalate`` in a row the machine is held down with
  ``fault`` "equipment refuses starts" (its ``command_refused`` carries
  ``escalate: true``, which the machine agent escalates as non-routine)
  until ``set_state up`` or a new session.
* **Records** are those of the simulator (``op_start``, ``op_done``,
  ``op_abort``, ``fault``, ``repaired``), so the supervisor checks the same
  invariants on a real cell's event log.

Per machine, only one coroutine at a time changes its state (a lock), so a
job's end is reported once even when a notification and a reconnect see it
together.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asyncua import Client, Node, ua

from agents.cell.equipment import OpcUaEquipment
from sim_bridge.plant_api import PlantEvents

from . import jobs
from .profiles import Profile, make_profile
from .pki import Credentials, OpcUaPki
from .session import LinkError, SessionParams, open_session, status_name

__all__ = ["OpcUaBackend", "OpcUaMachine"]

log = logging.getLogger("autocell.opcua")

Record = Callable[..., None]
Assumed = Callable[[str], tuple[str, int] | None]
WATCH_S = 0.5               # how often a session is probed
JOBS_PUBLISH_MS = 5         # requested publishing interval of job lists and machine states
                            # (node-opcua revises it to its minimum, 50 ms; not 0: asyncua's
                            # server then sends no keep-alive and asyncua's client recreates
                            # the "stale" subscription every second, its initial values
                            # news each time, so a job is never silent: ADR 61, 62)
READINGS_PUBLISH_MS = 500   # ... of readings
BACKOFF_S = (0.2, 0.5, 1.0, 2.0)
SLOW_RETRY_S = 5.0          # after an error that retrying alone cannot fix
RECONCILE_S = 5.0           # a running job silent this long has its state read afresh
DOUBT_S = 300.0             # how long a start refused in doubt is watched (ADR 72)
CLOSE_S = 10.0              # how long closing waits for a link's task to end


@dataclass(frozen=True)
class OpcUaMachine:
    """One machine of the cell on OPC UA: its id and its ``opcua:`` settings."""

    id: str
    settings: OpcUaEquipment

    @property
    def browse_name(self) -> str:
        return self.settings.machine or self.id


@dataclass
class _Machine:
    spec: OpcUaMachine
    link: _Link
    profile: Profile
    resolved: bool = False                    # its nodes were found on a session
    job: tuple[str, str] | None = None        # (task, JobOrderID) we run there
    job_args: dict[str, Any] = field(default_factory=dict)
    confirmed: bool = False                   # the server accepted the current job
    sent: str = ""                            # the JobOrderID whose start was last sent
    aborting: set[str] = field(default_factory=set)
    orphans: set[str] = field(default_factory=set)
    doubtful: dict[str, float] = field(default_factory=dict)   # JobOrderID -> when refused
                                  # while an earlier send of it was unanswered (ADR 72)
    reported_down: bool = False
    held: str = ""                            # why it is held down ("" = not held)
    item_down: bool = False
    refusals: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    readings: dict[str, float] = field(default_factory=dict)
    reading_due: bool = False
    heard_at: float = 0.0                     # monotonic time of its last job notification

    @property
    def id(self) -> str:
        return self.spec.id

    def usable(self) -> bool:
        return self.link.up and self.resolved and not self.held and not self.item_down


class OpcUaBackend:
    """Machines on OPC UA servers (``backend: opcua``), one session per endpoint."""

    def __init__(self, machines: list[OpcUaMachine], *, events: PlantEvents, record: Record,
                 pki: OpcUaPki, secrets: Mapping[str, Credentials],
                 assumed: Assumed = lambda _r: None) -> None:
        self.events = events
        self.record = record
        self.pki = pki
        self.assumed = assumed
        self.resources = frozenset(m.id for m in machines)
        self.links: dict[str, _Link] = {}
        self.machines: dict[str, _Machine] = {}
        for spec, key in session_keys(machines):
            s = spec.settings
            creds = None
            if s.user is not None:
                creds = secrets.get(s.user)
                if creds is None:
                    raise LinkError(s.endpoint, f"{spec.id}: user {s.user!r} is not in the "
                                                "OPC UA secrets file")
            link = self.links.get(key)
            if link is None:
                link = self.links[key] = _Link(self, SessionParams(s.endpoint, s, pki, creds))
            m = _Machine(spec, link, make_profile(spec.browse_name, s))
            link.machines.append(m)
            self.machines[spec.id] = m
        self._tasks: set[asyncio.Task[Any]] = set()
        self._connecting: dict[str, asyncio.Lock] = {}

    # -- lifecycle --------------------------------------------------------------------------------
    async def start(self, first_connect_s: float = 10.0) -> None:
        """Start every link; wait (at most ``first_connect_s``) for their first session, so
        that the machines are up when the agents first command them."""
        for link in self.links.values():
            link.task = asyncio.get_running_loop().create_task(link.run())
        waits = [asyncio.ensure_future(link.first.wait()) for link in self.links.values()]
        if waits:
            _done, pending = await asyncio.wait(waits, timeout=first_connect_s)
            for w in pending:
                w.cancel()

    async def close(self) -> None:
        """Stop the work in flight first, then the sessions: a profile still polling its
        unit (a PackML Reset awaiting Idle) would otherwise read on a closed session (the
        server's ``BadSessionIdInvalid`` printed at the end of ``bench plant``)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            # bounded: a library call that swallows its cancellation must not hang a shutdown
            await asyncio.wait(tasks, timeout=CLOSE_S)
        for link in self.links.values():
            await link.close()

    def connecting(self, endpoint: str) -> asyncio.Lock:
        """The sessions of one endpoint connect one at a time: each loads the server's data
        type definitions (hundreds of requests), which several at once on one server made
        time out under load, and asyncua generates their classes process-wide."""
        lock = self._connecting.get(endpoint)
        if lock is None:
            lock = self._connecting[endpoint] = asyncio.Lock()
        return lock

    def status(self) -> dict[str, Any]:
        return {e: {"up": link.up, "sessions": link.sessions, "error": link.error}
                for e, link in sorted(self.links.items())}

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            log.error("opcua: %s: %s", type(exc).__name__, exc)
            self.record("opcua_error", error=f"{type(exc).__name__}: {exc}")

    # -- commands (sim_bridge.plant_api.Plant) ------------------------------------------------------
    def running(self) -> dict[str, str]:
        out = {}
        for r in sorted(self.resources):
            a = self.assumed(r)
            if a is not None:
                out[r] = a[0]
        return out

    def query_state(self, resource: str) -> bool:
        return self.machines[resource].usable()

    def start_operation(self, resource: str, task: str, args: Mapping[str, Any]) -> bool:
        m = self.machines[resource]
        if not m.usable() or m.job is not None:
            m.reported_down = m.reported_down or not m.usable()
            return False
        jid = jobs.job_id(task, int(args.get("award_epoch", 0)))
        m.job, m.job_args, m.confirmed, m.sent = (task, jid), dict(args), False, ""
        self.spawn(self._start(m, jid))
        return True

    def abort_operation(self, resource: str, task: str) -> None:
        m = self.machines.get(resource)
        if m is None or m.job is None or m.job[0] != task:
            return
        jid = m.job[1]
        if not m.profile.can_abort:
            self._hand_back(m, "the machine cannot abort: it finishes the job unreported")
        elif m.usable():
            m.aborting.add(jid)
            self.spawn(self._abort(m, jid))
        else:
            self._hand_back(m, "aborted while the link is down")

    def move(self, resource: str, task: str, args: Mapping[str, Any]) -> bool:
        return False          # machines only (the model refuses `backend: opcua` on a robot)

    def set_state(self, resource: str, state: str) -> None:
        m = self.machines[resource]
        if state == "down" and not m.held:
            was_up = m.usable()
            m.held = "set_state"
            if m.job is not None and not m.profile.can_abort:
                self._hand_back(m, "held down; the machine cannot abort")
            elif m.job is not None:
                m.aborting.add(m.job[1])
                self.spawn(self._abort(m, m.job[1]))
            if was_up:
                self._fault(m, "set_state")
        elif state == "up" and m.held:
            m.held, m.refusals = "", 0
            self._maybe_repaired(m)

    # -- what the machines do --------------------------------------------------------------------
    async def _start(self, m: _Machine, jid: str) -> None:
        async with m.lock:
            # a reconnect's settle may have sent it already (commanded while the link came
            # up, it reached the settle first): sent twice, the machine would refuse the
            # second as a duplicate of a job that runs (ADR 70)
            if m.job is not None and m.job[1] == jid and m.sent != jid:
                await self._send_start(m)

    async def _send_start(self, m: _Machine, *, resend: bool = False) -> None:
        if m.job is None or not m.resolved:
            return
        task, jid = m.job
        m.sent, m.heard_at = jid, time.monotonic()
        try:
            why = await m.profile.start(jid, m.job_args)
        except ua.UaStatusCodeError as exc:
            why = status_name(exc)
        except (TimeoutError, asyncio.TimeoutError):
            if not m.profile.refuses_duplicates:
                return        # settled on reconnect
            if m.profile.answers_by_id:
                # no answer while the session lives: the start may still be queued in the
                # server (node-opcua answers a Read sent after it first), so neither the job
                # list nor a refusal can be trusted now; the same JobOrderID sent again
                # settles it, and a second silence leaves it to the reconciliation (ADR 70)
                if not resend:
                    await self._send_start(m, resend=True)
                return
            try:
                started = jid in await m.profile.read_states()
            except (ConnectionError, OSError, TimeoutError, asyncio.TimeoutError, ua.UaError):
                return        # the link is going: settled on reconnect
            if not started:
                return self._refused(m, "no answer to the start")
            why = None
        except (ConnectionError, OSError, ua.UaError):
            return            # the answer is lost with the link: settled on reconnect
        if why is not None:
            if resend:
                ran = await self._started_after_all(m, jid)
                if ran is not False:
                    return    # followed (True), or not known yet (None): still in doubt
                # refused, yet the earlier send may still be queued in the server behind
                # this one (ReturnStatus 3 is both "duplicate" and "busy"): should it run
                # after all, it is aborted, or its end recorded, never reported (ADR 72)
                m.doubtful[jid] = time.monotonic()
                self.record("opcua_refused_in_doubt", machine=m.id, task=task, job=jid)
            return self._refused(m, why)
        m.confirmed, m.refusals = True, 0
        m.heard_at = time.monotonic()
        a = m.job_args
        self.record("op_start", machine=m.id, task=task, order=a.get("order", ""),
                    epoch=a.get("award_epoch", 0), setup_s=a.get("setup_s", 0.0), job=jid)

    def _refused(self, m: _Machine, why: str) -> None:
        assert m.job is not None
        task, jid = m.job
        m.job = None
        m.refusals += 1
        escalate = m.refusals >= m.spec.settings.refusals_to_escalate
        self.record("opcua_refused", machine=m.id, task=task, job=jid, why=why,
                    consecutive=m.refusals)
        self.events.stopped(m.id, task, "refused")
        self.events.command_refused(m.id, task, f"equipment refused the start: {why}",
                                    escalate=escalate)
        if escalate and not m.held:
            m.held = "refuses"
            self._fault(m, f"equipment refuses starts ({m.refusals} in a row: {why})")

    async def _started_after_all(self, m: _Machine, jid: str) -> bool | None:
        """A re-sent start (its first answer lost) that the machine refuses may be refused
        *because* the first one ran: it reached the server after the job list was read on
        reconnect (a loaded server works through a lost session's queue, ADR 62), or it
        ran, ended and was cleared before the re-send (ADR 70).  The job list, read again,
        says so while the job is listed; once it is not, the job's own response
        (:meth:`~.profiles.Profile.job_state`) does.  A job the machine ran is followed as
        confirmed — its end reported once — not refused (True); one it never had may be
        refused (False); None when the machine could not be asked (the link going): the
        job stays in doubt, for the reconciliation or the reconnect to settle."""
        try:
            states = await m.profile.read_states()
            if jid not in states:
                st = await m.profile.job_state(jid)
                if st is None:
                    return False
                states = {**states, jid: st}
        except (ConnectionError, OSError, TimeoutError, asyncio.TimeoutError, ua.UaError):
            return None if m.profile.answers_by_id else False
        m.confirmed, m.refusals = True, 0
        m.heard_at = time.monotonic()
        task, a = (m.job[0] if m.job else ""), m.job_args
        self.record("opcua_resend_found_started", machine=m.id, task=task, job=jid,
                    state=jobs.JOB_STATES.get(states[jid], str(states[jid])))
        self.record("op_start", machine=m.id, task=task, order=a.get("order", ""),
                    epoch=a.get("award_epoch", 0), setup_s=a.get("setup_s", 0.0), job=jid)
        await self._settle(m, states, reconnect=False)
        return True

    async def _abort(self, m: _Machine, jid: str) -> None:
        async with m.lock:
            if not m.resolved:
                return
            try:
                states = await m.profile.abort(jid)
            except (ua.UaError, ConnectionError, OSError, TimeoutError, asyncio.TimeoutError):
                return        # the job list (or the reconnect) says how it ended
            if states is not None:
                await self._settle(m, states, reconnect=False)

    def reconcile(self, link: _Link) -> None:
        """The safety net under the subscriptions: a confirmed job that has been silent for
        :data:`RECONCILE_S` has its state read afresh, so a job end whose notification was
        lost (a server's publish queue overflowing, a client publish loop that stopped) is
        still reported, once.  Only for profiles whose read has no side effect."""
        now = time.monotonic()
        for m in link.machines:
            if (((m.job is not None and (m.confirmed or m.sent == m.job[1])) or m.doubtful)
                    and m.profile.reconcilable
                    and not m.lock.locked() and now - m.heard_at >= RECONCILE_S):
                m.heard_at = now
                self.spawn(self._reconcile(m))

    async def _reconcile(self, m: _Machine) -> None:
        async with m.lock:
            if not (m.resolved and m.link.up):
                return
            if m.job is None:          # only refused-in-doubt starts to watch
                states = await self._states(m.profile.read_states())
                if states is not None:
                    await self._settle(m, states, reconnect=False)
                return
            jid = m.job[1]
            if not m.confirmed:       # a start still in doubt: the same JobOrderID again
                return await self._send_start(m, resend=True)
            states = await self._states(m.profile.read_states())
            if states is None:
                return
            if states.get(jid) in (jobs.ENDED, jobs.ABORTED):
                self.record("opcua_missed_end", machine=m.id, task=m.job[0], job=jid,
                            state=jobs.JOB_STATES[states[jid]])
            await self._settle(m, states, reconnect=False)

    async def on_jobs(self, m: _Machine, node: ua.NodeId, value: Any) -> None:
        """A job node changed: report what ended.  The profile reads the value under the
        machine's lock, after any start in flight has recorded its job."""
        async with m.lock:
            await self._settle(m, m.profile.job_states(node, value), reconnect=False)

    async def _settle(self, m: _Machine, states: dict[str, int], *, reconnect: bool) -> None:
        profile = m.profile
        for jid in sorted(m.orphans):
            st = states.get(jid)
            if st == jobs.RUNNING and profile.can_abort:
                self.record("opcua_orphan_abort", machine=m.id, job=jid)
                now = await self._states(profile.abort(jid))
                st = (now or {}).get(jid, st)
            if st in (jobs.ENDED, jobs.ABORTED):
                self.record("opcua_late_end", machine=m.id, job=jid,
                            state=jobs.JOB_STATES[st])
                await self._call(profile.clear(jid))
                m.orphans.discard(jid)
            elif st is None:
                m.orphans.discard(jid)
        for jid in sorted(m.doubtful):
            await self._watch_doubtful(m, jid, states.get(jid))
        if m.job is None:
            return
        task, jid = m.job
        st = states.get(jid)
        if st is None and reconnect and m.confirmed and profile.answers_by_id:
            # not listed: cleared at the machine meanwhile, or a restarted server; a
            # machine that keeps its responses says how the job ended (ADR 72)
            try:
                st = await profile.job_state(jid)
            except (ConnectionError, OSError, TimeoutError, asyncio.TimeoutError, ua.UaError):
                return        # the link is going: the next reconnect settles it
            if st is not None:
                self.record("opcua_found_by_response", machine=m.id, task=task, job=jid,
                            state=jobs.JOB_STATES.get(st, str(st)))
            if st is not None and st not in (jobs.ENDED, jobs.ABORTED):
                return        # still under way at the machine (a list lagging): followed on
        if st == jobs.ENDED:
            quality = await profile.quality(jid, m.spec.settings.quality_ok)
            m.job = None
            self.record("op_done", machine=m.id, task=task, order=m.job_args.get("order", ""),
                        quality=quality, job=jid)
            self.events.operation_done(m.id, task, quality)
            await self._call(profile.clear(jid))
        elif st == jobs.ABORTED:
            m.job = None
            requested = jid in m.aborting
            m.aborting.discard(jid)
            self.record("op_abort", machine=m.id, task=task,
                        why="aborted" if requested else "aborted at the machine")
            self.events.stopped(m.id, task, "aborted")
            if not requested:
                self.events.command_refused(m.id, task, "the job was aborted at the machine")
            await self._call(profile.clear(jid))
        elif st is None and reconnect:
            if not m.confirmed and m.sent != jid:
                await self._send_start(m)                # commanded as the link came up
            elif not m.confirmed and profile.refuses_duplicates:
                await self._send_start(m, resend=True)   # the same JobOrderID: never twice
            elif not m.confirmed:
                m.job = None                     # it may not be sent again: hand it back
                self.record("op_abort", machine=m.id, task=task,
                            why="the start's answer was lost and the machine is not running it")
                self.events.stopped(m.id, task, "lost")
                self.events.command_refused(m.id, task, "start not confirmed before the link "
                                                        "was lost")
            else:
                # it ran, and the machine (restarted) no longer knows how it ended: it may
                # have ended while the link was down.  Called again blindly, the work could
                # be done twice; handed back as refused, silently so.  The agents hold the
                # task and ask a person (ADR 72)
                m.job = None
                self.record("op_abort", machine=m.id, task=task,
                            why="the machine no longer knows the job")
                self.record("opcua_outcome_unknown", machine=m.id, task=task, job=jid)
                self.events.stopped(m.id, task, "outcome unknown")
                self.events.command_refused(
                    m.id, task, f"the machine no longer knows job {jid} (restarted?): it may "
                                "have ended while the link was down", outcome_unknown=True)

    async def _watch_doubtful(self, m: _Machine, jid: str, st: int | None) -> None:
        """A start reported refused whose earlier send was unanswered (ADR 72).  Unlike an
        orphan it stays watched while the machine does not list it — its send may come out
        of the server's queue at any time — until it shows up: running, it is aborted (the
        agents have called the task again elsewhere); ended, the double run is recorded
        (``opcua_refused_ran``) for a person, since nothing can undo it."""
        if st == jobs.RUNNING and m.profile.can_abort:
            self.record("opcua_orphan_abort", machine=m.id, job=jid, why="refused in doubt")
            now = await self._states(m.profile.abort(jid))
            st = (now or {}).get(jid, st)
        if st in (jobs.ENDED, jobs.ABORTED):
            self.record("opcua_late_end", machine=m.id, job=jid, state=jobs.JOB_STATES[st])
            if st == jobs.ENDED:
                log.error("opcua: %s: job %s was reported refused and ran to its end",
                          m.id, jid)
                self.record("opcua_refused_ran", machine=m.id, job=jid)
            m.doubtful.pop(jid, None)
            await self._call(m.profile.clear(jid))
        elif st is None and time.monotonic() - m.doubtful[jid] > DOUBT_S:
            m.doubtful.pop(jid, None)         # no server keeps a request queued this long
            self.record("opcua_doubt_expired", machine=m.id, job=jid)

    async def _call(self, coro: Coroutine[Any, Any, int]) -> None:
        try:
            await coro
        except (ua.UaError, ConnectionError, OSError, TimeoutError, asyncio.TimeoutError):
            pass

    async def _states(self, coro: Coroutine[Any, Any, dict[str, int] | None]
                      ) -> dict[str, int] | None:
        try:
            return await coro
        except (ua.UaError, ConnectionError, OSError, TimeoutError, asyncio.TimeoutError):
            return None

    def on_item_state(self, m: _Machine) -> None:
        """A state node changed: the machine went down (its job handed back) or came up."""
        reason = m.profile.down_reason()
        down = reason is not None
        if down == m.item_down:
            return
        was_up = m.usable()
        m.item_down = down
        if reason is not None:
            if m.job is not None:
                self._hand_back(m, reason)
            if was_up:
                self._fault(m, reason)
        else:
            self._maybe_repaired(m)
            if m.orphans:          # what the machine kept doing while it was down
                self.spawn(self._resettle(m))

    async def _resettle(self, m: _Machine) -> None:
        async with m.lock:
            if m.resolved and m.link.up:
                states = await self._states(m.profile.read_states())
                if states is not None:
                    await self._settle(m, states, reconnect=False)

    def on_reading(self, m: _Machine, name: str, value: Any) -> None:
        try:
            m.readings[name] = float(value)
        except (TypeError, ValueError):
            return
        if not m.reading_due:
            m.reading_due = True
            asyncio.get_running_loop().call_soon(self._flush_readings, m)

    def _flush_readings(self, m: _Machine) -> None:
        m.reading_due = False
        self.events.reading(m.id, dict(sorted(m.readings.items())))

    # -- down and up ------------------------------------------------------------------------------
    def _hand_back(self, m: _Machine, why: str) -> None:
        """The current job is no longer ours: the agents re-route its task."""
        if m.job is None:
            return
        task, jid = m.job
        m.job = None
        m.orphans.add(jid)
        self.record("op_abort", machine=m.id, task=task, why=why)
        self.events.stopped(m.id, task, why)

    def _fault(self, m: _Machine, reason: str) -> None:
        m.reported_down = True
        self.record("fault", machine=m.id, reason=reason)
        self.events.fault(m.id, reason)

    def _maybe_repaired(self, m: _Machine) -> None:
        if m.reported_down and m.usable():
            m.reported_down = False
            self.record("repaired", machine=m.id)
            self.events.repaired(m.id)

    def link_lost_past_grace(self, link: _Link, why: str) -> None:
        for m in link.machines:
            if m.job is not None:
                self._hand_back(m, f"link lost: {why}")
            if not m.reported_down:
                self._fault(m, f"link lost: {why}")

    async def link_up(self, link: _Link) -> None:
        """A new session: adopt what a restarted gateway left running, settle, repair."""
        for m in link.machines:
            async with m.lock:
                if m.job is None and not m.orphans:
                    a = self.assumed(m.id)
                    if a is not None:
                        m.job, m.confirmed = (a[0], jobs.job_id(*a)), True
                        m.profile.adopt(m.job[1])
                if m.resolved:
                    await self._settle(m, await m.profile.read_states(), reconnect=True)
                if m.held == "refuses":
                    m.held, m.refusals = "", 0
                if m.resolved:
                    m.item_down = m.profile.down_reason() is not None
            self._maybe_repaired(m)


def session_keys(machines: list[OpcUaMachine]) -> list[tuple[OpcUaMachine, str]]:
    """Each machine with the key of the session (link) it uses: its endpoint, or with
    ``sessions: N`` on that endpoint ``ENDPOINT#k``, the endpoint's machines dealt to the N
    sessions in turn, in cell-file order (fewer sessions than machines are never opened)."""
    count: dict[str, int] = {}
    for spec in machines:
        e = spec.settings.endpoint
        count[e] = max(count.get(e, 1), spec.settings.sessions)
    seen: dict[str, int] = {}
    out = []
    for spec in machines:
        e = spec.settings.endpoint
        k = seen.get(e, 0)
        seen[e] = k + 1
        out.append((spec, e if count[e] == 1 else f"{e}#{k % count[e] + 1}"))
    return out


class _Handler:
    """asyncua subscription callbacks, routed to the backend (never blocking the loop)."""

    def __init__(self, link: _Link) -> None:
        self.link = link
        self.routes: dict[Any, tuple[_Machine, str]] = {}

    def datachange_notification(self, node: Node, val: Any, _data: Any) -> None:
        route = self.routes.get(node.nodeid)
        if route is None:
            return
        m, what = route
        backend = self.link.backend
        if what in ("state", "both"):
            m.profile.on_state(node.nodeid, val)
            if self.link.up:
                backend.on_item_state(m)
        if what in ("jobs", "both"):
            m.heard_at = time.monotonic()
            backend.spawn(backend.on_jobs(m, node.nodeid, val))
        elif what != "state":
            backend.on_reading(m, what, val)

    def status_change_notification(self, _status: Any) -> None:
        self.link.poke()


class _Link:
    """One endpoint: its session, its watchdog, its reconnects."""

    def __init__(self, backend: OpcUaBackend, params: SessionParams) -> None:
        self.backend = backend
        self.params = params
        self.machines: list[_Machine] = []
        self.client: Client | None = None
        self.up = False
        self.sessions = 0
        self.error = ""
        self.first = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self._closed = False
        self._lost = asyncio.Event()

    @property
    def endpoint(self) -> str:
        return self.params.endpoint

    def poke(self) -> None:
        self._lost.set()

    async def close(self) -> None:
        self._closed = True
        if self.task is not None:
            self.task.cancel()
            # bounded, as in OpcUaBackend.close; the task's result is of no interest now
            await asyncio.wait([self.task], timeout=CLOSE_S)
            if self.task.done() and not self.task.cancelled():
                self.task.exception()          # retrieved, so asyncio does not log it
        await self._drop()

    async def _drop(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            try:
                await asyncio.wait_for(client.disconnect(), 2.0)
            except Exception:  # noqa: BLE001 - the session is being given up
                pass

    async def run(self) -> None:
        attempt = 0
        lost_at: float | None = None
        grace = self.params.settings.grace_s
        while not self._closed:
            try:
                async with self.backend.connecting(self.endpoint):
                    await self._connect()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - whatever failed, the link retries
                transient = getattr(exc, "transient", not isinstance(exc, (LinkError,
                                                                          jobs.MissingNode)))
                if not isinstance(exc, (LinkError, jobs.MissingNode)):
                    exc = LinkError(self.endpoint, f"{type(exc).__name__}: {exc}",
                                    transient=True)
                if str(exc) != self.error:
                    self.error = str(exc)
                    log.error("opcua: %s", exc)
                    self.backend.record("opcua_link_error", endpoint=self.endpoint,
                                        error=str(exc))
                self.first.set()        # the gateway need not wait for a link that fails
                if lost_at is not None and time.monotonic() - lost_at >= grace:
                    self.backend.link_lost_past_grace(self, self.error)
                delay = BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)] if transient else SLOW_RETRY_S
                attempt += 1
                wait = delay if lost_at is None else min(
                    delay, max(0.0, lost_at + grace - time.monotonic()) or delay)
                await asyncio.sleep(wait)
                continue
            attempt, lost_at, self.error = 0, None, ""
            self.up = True
            self.sessions += 1
            self.backend.record("opcua_link_up", endpoint=self.endpoint, session=self.sessions)
            try:
                await self.backend.link_up(self)
            except (ConnectionError, OSError, TimeoutError, asyncio.TimeoutError,
                    ua.UaError) as exc:
                # a session that cannot read its job lists is as good as lost; before ADR 70
                # this ended the link's task, its machines up and never heard of again
                why = f"settling after connecting failed: {type(exc).__name__}: {exc}"
            else:
                self.first.set()
                why = await self._watch()
            self.first.set()         # (also when the settle failed: the gateway waits no more)
            self.up = False
            lost_at = time.monotonic()
            self.backend.record("opcua_link_lost", endpoint=self.endpoint, why=why)
            await self._drop()
            if grace <= 0:
                self.backend.link_lost_past_grace(self, why)

    async def _connect(self) -> None:
        client = await open_session(self.params)
        try:
            await client.load_data_type_definitions()
            namespaces: list[str] = await client.get_namespace_array()
            handler = _Handler(self)
            # job ends and machine states as soon as the server publishes them; readings
            # at the pace a person (or the maintenance model) needs them
            fast = await client.create_subscription(JOBS_PUBLISH_MS, handler)
            slow = await client.create_subscription(READINGS_PUBLISH_MS, handler)
            for m in self.machines:
                watch = await m.profile.resolve(client, namespaces)
                m.resolved = True
                for node, what in watch:
                    handler.routes[node.nodeid] = (m, what)
                await fast.subscribe_data_change([node for node, _what in watch],
                                                 sampling_interval=ua.Double(0.0))
                readings = m.profile.readings
                for name, node in readings.items():
                    handler.routes[node.nodeid] = (m, name)
                if readings:
                    await slow.subscribe_data_change(list(readings.values()))
        except BaseException:
            try:
                await asyncio.wait_for(client.disconnect(), 2.0)
            except Exception:  # noqa: BLE001 - already failing
                pass
            raise
        self.client = client
        self._lost.clear()

    async def _watch(self) -> str:
        """Until the session is lost: probe the server's state every :data:`WATCH_S`."""
        assert self.client is not None
        state = self.client.nodes.server_state
        while True:
            try:
                await asyncio.wait_for(self._lost.wait(), WATCH_S)
            except TimeoutError:
                pass
            try:
                value = await asyncio.wait_for(state.read_value(), self.params.timeout_s)
            except Exception as exc:  # noqa: BLE001 - any failure of the probe is a lost link
                return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            if int(value) != 0:          # ServerState.Running
                return f"server state {value}"
            self._lost.clear()
            self.backend.reconcile(self)


def default_pki(keys_dir: Path) -> OpcUaPki:
    return OpcUaPki(keys_dir / "opcua")
