"""``autocell bench plant --backend opcua``: a command's round trip through a real OPC UA stack.

What is measured: the gateway (:class:`~sim_bridge.gateway.PlantGateway`
with the :class:`~sim_bridge.opcua.backend.OpcUaBackend`, in this process)
is given ``start_operation`` commands for zero-length jobs; each goes through
the fence to a ``StoreAndStart`` call on an OPC UA server not written here
(the node-opcua machine emulator, ``tests/opcua``, installed by
``tests/setup.sh``, or with ``--stack asyncua`` asyncua's server; or any
Machinery Jobs server with ``--endpoint``), with
Basic256Sha256/SignAndEncrypt on loopback, and back as the job list's data
change to the ``operation_done`` event the gateway emits.  The round trip is
command → event, wall clock, per job; ``--machines`` machines on one gateway
(one session per endpoint, or ``--sessions N``; one emulator, or ``--servers K``
sharing them) are loaded in one of two ways (``--load``):

* ``burst`` (the default): every machine is commanded in the same instant, round after
  round — the worst case, fifty calls queued at once on one server;
* ``steady``: every machine runs its jobs back to back as in a running cell, its next
  command sent when its previous job ended plus a seeded exponential gap of mean
  ``--gap-ms`` (:func:`_steady`), so the commands are spread in time.
  The gateway's CPU per
event is this process's CPU time over the run divided by the events; the
server's (an emulator the bench started) is read from ``/proc`` the same way,
and each round trip is split into phases (:class:`_Phases`) to show where it
goes.  The load average is printed beside them: the machine is shared.

Target (issue 14): p99 ≤ 20 ms at 50 machines.  A job's end reaches the
gateway as a data change, so the server's fastest publishing interval is a
floor of the round trip: node-opcua's is 50 ms (``ServerSubscription.
minimumPublishingInterval``); asyncua's server honours the 5 ms asked for.  At 50 machines the floor on one host is
the server's CPU: fifty jobs' calls one after another (ADR 61).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agents.base import PlantEventIn
from agents.cell.equipment import OpcUaEquipment
from agents.cell.specs import MachineSpec
from agents.protocol.actions import Command
from sim_bridge.gateway import PlantGateway
from sim_bridge.opcua import batch
from sim_bridge.opcua.backend import OpcUaBackend, OpcUaMachine
from sim_bridge.opcua.pki import OpcUaPki

ROOT = Path(__file__).resolve().parents[2]
EMULATOR = ROOT / "tests" / "opcua" / "machine_emulator.mjs"
READY_BOUND_S = 120.0
CONNECT_S = 120.0          # how long the bench waits for every machine's session
END_BOUND_S = 60.0         # how long a job's end is waited for before the run fails
LOADS = ("burst", "steady")
GAP_MS = 500.0             # steady load: the mean gap after a job's end before the next start


class Emulator:
    """A machine emulator on an OPC UA stack not written here, as a child process.

    ``stack`` is ``node`` (node-opcua, ``tests/opcua/machine_emulator.mjs``) or
    ``asyncua`` (asyncua's server, ``python -m tests.helpers.opcua_server``);
    both take the flags of tests/opcua/CONTRACT.md.  ``port`` 0 lets the
    server pick one; a fixed port lets a killed server come back where the
    gateway looks for it.  Its PKI directory and job log survive a restart."""

    def __init__(self, workdir: Path, machines: list[str], *, trust_client: Path,
                 speed: float = 1.0, stack: str = "node", port: int = 0,
                 extra: list[str] | None = None) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.ready = workdir / "ready.json"
        self.pki = workdir / "pki"
        self.job_log = workdir / "jobs.jsonl"
        self.argv = ["--port", str(port), "--machines", ",".join(machines),
                     "--speed", f"{speed:g}", "--job-log", str(self.job_log), "--pki",
                     str(self.pki), "--trust-client", str(trust_client), "--ready-file",
                     str(self.ready), *(extra or [])]
        if stack == "node":
            if not (EMULATOR.exists() and (EMULATOR.parent / "node_modules").is_dir()):
                raise FileNotFoundError(
                    f"{EMULATOR} or its node_modules is missing: run `bash tests/setup.sh` (it "
                    "installs node-opcua), or pass --endpoint of a Machinery Jobs server")
            node = shutil.which("node")
            if node is None:
                raise FileNotFoundError("node is not installed: run `bash tests/setup.sh`")
            self.cmd, self.cwd = [node, str(EMULATOR)], EMULATOR.parent
        elif stack == "asyncua":
            self.cmd, self.cwd = [sys.executable, "-m", "tests.helpers.opcua_server"], ROOT
        else:
            raise ValueError(f"unknown OPC UA stack {stack!r}: node or asyncua")
        self.stack = stack
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        """(Re)start the server process; :meth:`wait_ready` waits for it."""
        self.ready.unlink(missing_ok=True)
        log = (self.workdir / "emulator.log").open("ab")
        self.proc = subprocess.Popen([*self.cmd, *self.argv], stdout=log,
                                     stderr=subprocess.STDOUT, cwd=self.cwd)
        log.close()

    def wait_ready(self, progress: Callable[[str], None] = lambda _s: None) -> str:
        """The endpoint, once the server listens (it writes its ready file then)."""
        assert self.proc is not None
        deadline = time.monotonic() + READY_BOUND_S
        while not self.ready.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"the {self.stack} emulator exited with "
                                   f"{self.proc.returncode}: {self.output()[-2000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the {self.stack} emulator did not get ready")
            time.sleep(0.05)
        endpoint: str = json.loads(self.ready.read_text())["endpoint"]
        progress(f"{self.stack} emulator ready at {endpoint}")
        return endpoint

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def output(self) -> str:
        return (self.workdir / "emulator.log").read_text(errors="replace")

    @property
    def server_cert(self) -> bytes:
        return (self.pki / "server_cert.der").read_bytes()

    def jobs(self) -> list[dict[str, Any]]:
        """The server's own job log."""
        if not self.job_log.exists():
            return []
        return [json.loads(line) for line in self.job_log.read_text().splitlines() if line]

    def kill(self) -> None:
        """``kill -9``: the server dies mid-whatever, as a power cut would."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[k]


def _cpu_s(pids: list[int] | None) -> float:
    """CPU seconds (user + system) of processes ``pids`` so far, from /proc; 0 if unknown."""
    total = 0.0
    for pid in pids or []:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


class _Phases:
    """Where a round trip's time goes, per job (wall clock, this process):

    * ``call``: the command until the start's Call is answered (the fence, the queue of
      requests ahead of it on the session, both ends' crypto and the server's method);
    * ``notify``: that answer until the last job-list notification before the end (the
      server's publishing interval, and the queue behind other responses);
    * ``result``: that notification until ``operation_done`` (the machine's lock, the
      result's Call, the gateway's own work).

    The backend is observed from outside (its profiles' ``start`` and its ``on_jobs``
    wrapped on the instances), so what is measured runs the code under test unchanged."""

    def __init__(self, backend: OpcUaBackend) -> None:
        self.answered: dict[str, float] = {}      # task -> its start's Call answered
        self.notified: dict[str, float] = {}      # machine -> last job-list notification
        self.rows: list[tuple[float, float, float]] = []
        for m in backend.machines.values():
            m.profile.start = self._timed_start(m.profile.start, m)  # type: ignore[method-assign]
        on_jobs = backend.on_jobs

        def noticed(m: Any, node: Any, value: Any) -> Any:
            self.notified[m.id] = time.perf_counter()
            return on_jobs(m, node, value)
        backend.on_jobs = noticed  # type: ignore[method-assign]

    def _timed_start(self, start: Any, m: Any) -> Any:
        async def timed(jid: str, args: Any) -> Any:
            task = m.job[0] if m.job is not None else jid
            try:
                return await start(jid, args)
            finally:
                self.answered[task] = time.perf_counter()
        return timed

    def done(self, resource: str, task: str, sent: float, now: float) -> None:
        answered = self.answered.pop(task, now)
        notified = min(max(self.notified.get(resource, answered), answered), now)
        self.rows.append((answered - sent, notified - answered, now - notified))

    def summary(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for i, name in enumerate(("call", "notify", "result")):
            values = [row[i] * 1000 for row in self.rows]
            out[f"{name}_p50_ms"] = round(_percentile(values, 0.50), 3)
            out[f"{name}_p99_ms"] = round(_percentile(values, 0.99), 3)
        return out


async def _measure(where: dict[str, str], pki: OpcUaPki, machines: list[str], rounds: int,
                   progress: Callable[[str], None], profile: str = "machinery-jobs",
                   server_pids: list[int] | None = None, sessions: int = 1,
                   load: str = "burst", gap_ms: float = GAP_MS, seed: int = 1) -> dict[str, Any]:
    sent: dict[str, float] = {}
    ends: dict[str, asyncio.Future[None]] = {}    # steady load: task -> its end
    samples: list[float] = []
    done = asyncio.Event()
    pending: set[str] = set()
    refused: list[str] = []
    phases: _Phases | None = None

    def emit(ev: PlantEventIn) -> None:
        if ev.event == "operation_done" and ev.task in sent:
            now = time.perf_counter()
            t0 = sent.pop(ev.task)
            samples.append(now - t0)
            if phases is not None:
                phases.done(ev.resource, ev.task, t0, now)
            pending.discard(ev.task)
        elif ev.event in ("command_refused", "fault"):
            refused.append(f"{ev.event} {ev.resource} {ev.data}")
            pending.discard(ev.task)
        if ev.event in ("operation_done", "command_refused", "fault") and ev.task in ends:
            end = ends.pop(ev.task)
            if not end.done():
                end.set_result(None)
        if not pending:
            done.set()

    specs = [MachineSpec(m, location="bench") for m in machines]
    gateway = PlantGateway(specs, [], emit=emit, record=lambda *_a, **_k: None)
    backend = OpcUaBackend(
        [OpcUaMachine(m, OpcUaEquipment(endpoint=where[m], profile=profile, sessions=sessions))
         for m in machines], events=gateway, record=lambda *_a, **_k: None, pki=pki, secrets={})
    gateway.attach(backend)
    phases = _Phases(backend)
    await backend.start(first_connect_s=CONNECT_S)
    # a first attempt that fails (a request timing out on a loaded machine) is retried by
    # the link itself: the bench waits for every machine, within CONNECT_S
    deadline = time.monotonic() + CONNECT_S
    while not all(backend.query_state(m) for m in machines):
        if time.monotonic() >= deadline:
            raise RuntimeError(f"the gateway did not connect within {CONNECT_S:g} s: "
                               f"{backend.status()}")
        await asyncio.sleep(0.2)
    cpu0, wall0, server0 = time.process_time(), time.perf_counter(), _cpu_s(server_pids)
    requests0 = 0
    if load == "steady":
        cpu0, wall0, server0, requests0 = await _steady(
            gateway, machines, rounds, gap_ms, seed, sent, ends, phases, samples, progress,
            server_pids)
    for r in range(rounds + 1 if load == "burst" else 0):            # round 0 warms up (first calls, type caches)
        done.clear()
        for m in machines:
            task = f"{m}-r{r}"
            pending.add(task)
            sent[task] = time.perf_counter()
            _command(gateway, m, task)
        try:
            await asyncio.wait_for(done.wait(), END_BOUND_S)
        except (TimeoutError, asyncio.TimeoutError):
            raise RuntimeError(_no_end(r, sorted(pending), backend)) from None
        if r == 0:
            samples.clear()
            phases.rows.clear()
            cpu0, wall0, server0 = time.process_time(), time.perf_counter(), _cpu_s(server_pids)
            requests0 = sum(b.requests for b in batch.batches())
        if (r + 1) % max(1, rounds // 5) == 0:
            progress(f"round {r}/{rounds}")
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    server_cpu = _cpu_s(server_pids) - server0
    requests = sum(b.requests for b in batch.batches()) - requests0
    await backend.close()
    if refused:
        raise RuntimeError(f"the server refused: {refused[:3]}")
    return {"samples": samples, "cpu_s": cpu, "wall_s": wall, "server_cpu_s": server_cpu,
            "phases": phases.summary(), "call_requests": requests}


def _no_end(round_: int, tasks: list[str], backend: Any) -> str:
    """Why a wait for job ends gave up: which tasks, and what the backend knows."""
    return (f"round {round_}: no end within {END_BOUND_S:g} s for {tasks[:5]} "
            f"({len(tasks)} waiting); backend: {backend.status()}")


def _command(gateway: PlantGateway, machine: str, task: str) -> None:
    gateway.command(Command("start_operation", machine, task,
                            {"duration_s": 0.0, "award_epoch": 1, "order": "bench"}))


async def _steady(gateway: PlantGateway, machines: list[str], rounds: int, gap_ms: float,
                  seed: int, sent: dict[str, float], ends: dict[str, asyncio.Future[None]],
                  phases: _Phases, samples: list[float], progress: Callable[[str], None],
                  server_pids: list[int] | None) -> tuple[float, float, float, int]:
    """The steady load: every machine runs its jobs back to back, as in a running cell —
    its next command is sent when its previous job ended plus a gap drawn from an
    exponential distribution of mean ``gap_ms`` (a seeded stream per machine), so the
    commands are spread in time instead of sent in one instant.  The first job of every
    machine warms up (together, as a burst), and is not counted; so is the CPU until then.
    Returns the baselines (CPU, wall, server CPU, CallRequests) taken after the warm-up."""
    loop = asyncio.get_running_loop()

    async def job(machine: str, task: str) -> None:
        end = ends[task] = loop.create_future()
        sent[task] = time.perf_counter()
        _command(gateway, machine, task)
        try:
            await asyncio.wait_for(end, END_BOUND_S)
        except (TimeoutError, asyncio.TimeoutError):
            raise RuntimeError(_no_end(int(task.rsplit("-r", 1)[1]), [task],
                                       gateway.backends[machine])) from None

    await asyncio.gather(*(job(m, f"{m}-r0") for m in machines))
    samples.clear()
    phases.rows.clear()
    baselines = (time.process_time(), time.perf_counter(), _cpu_s(server_pids),
                 sum(b.requests for b in batch.batches()))

    async def machine_runs(machine: str) -> None:
        rng = random.Random(f"{seed}:{machine}")
        for r in range(1, rounds + 1):
            await asyncio.sleep(rng.expovariate(1000.0 / gap_ms) if gap_ms > 0 else 0.0)
            await job(machine, f"{machine}-r{r}")
            if machine == machines[0] and r % max(1, rounds // 5) == 0:
                progress(f"round {r}/{rounds} (first machine)")

    await asyncio.gather(*(machine_runs(m) for m in machines))
    return baselines


def run(machines: int = 1, rounds: int = 50, endpoint: str | None = None,
        progress: Callable[[str], None] = lambda _s: None, stack: str = "node",
        profile: str = "machinery-jobs", sessions: int = 1, servers: int = 1,
        load: str = "burst", gap_ms: float = GAP_MS, seed: int = 1) -> dict[str, Any]:
    """One configuration: ``machines`` machines on one gateway, ``rounds`` rounds; with
    ``profile`` ``packml`` they are the emulator's PackML units (a round trip is
    then Start to Complete, and the Reset before the next round is inside it).
    ``sessions`` is the cell file's ``sessions:`` per endpoint; ``servers`` emulator
    processes share the machines between them (dealt in turn), as machines of a plant each
    have their own controller."""
    if load not in LOADS:
        raise ValueError(f"--load is one of {LOADS}, not {load!r}")
    if gap_ms < 0:
        raise ValueError("--gap-ms must be >= 0")
    if endpoint is not None and servers != 1:
        raise ValueError("--servers starts emulators; it cannot go with --endpoint")
    with tempfile.TemporaryDirectory(prefix="autocell-bench-plant-") as tmp:
        work = Path(tmp)
        pki = OpcUaPki(work / "gateway")
        pki.ensure_own()
        ids = [f"m{i + 1:02d}" for i in range(machines)]
        groups = [ids[k::servers] for k in range(min(servers, machines))]
        emulators: list[Emulator] = []
        try:
            units = profile == "packml"
            for k, group in enumerate(groups if endpoint is None else []):
                emulators.append(Emulator(
                    work / f"server{k + 1}", [] if units else group, trust_client=pki.cert_path,
                    stack=stack, extra=["--packml", ",".join(group)] if units else None))
            where: dict[str, str] = {}
            for emulator, group in zip(emulators, groups, strict=False):
                url = emulator.wait_ready(progress)
                pki.trust(emulator.server_cert)
                where.update({m: url for m in group})
            if endpoint is not None:
                where = {m: endpoint for m in ids}
            try:
                m = asyncio.run(_measure(where, pki, ids, rounds, progress, profile,
                                         server_pids=[e.pid for e in emulators if e.pid],
                                         sessions=sessions, load=load, gap_ms=gap_ms,
                                         seed=seed))
            except RuntimeError as exc:
                # the server's own word on what it refused, before its job log is deleted
                why = [f"{j.get('machine')} {j.get('job')}: {j.get('why')}"
                       for e in emulators for j in e.jobs() if j.get("event") == "refused"]
                if why:
                    raise RuntimeError(f"{exc}; the server's job log: {why[:5]}") from exc
                raise
        finally:
            for emulator in emulators:
                emulator.stop()
    samples_ms = [s * 1000 for s in m["samples"]]
    events = len(samples_ms)
    server = "endpoint" if endpoint is not None else f"{stack} emulator"
    if len(emulators) > 1:
        server = f"{len(emulators)} {stack} emulators"
    return {"backend": "opcua", "profile": profile, "load": load,
            "gap_ms": gap_ms if load == "steady" else None, "seed": seed,
            "machines": machines, "rounds": rounds,
            "jobs": events, "server": server, "servers": max(1, len(emulators)),
            "sessions": sessions, "security": "Basic256Sha256/SignAndEncrypt",
            "p50_ms": round(_percentile(samples_ms, 0.50), 3),
            "p99_ms": round(_percentile(samples_ms, 0.99), 3),
            "max_ms": round(max(samples_ms), 3) if samples_ms else float("nan"),
            "events_per_s": round(events / m["wall_s"], 1) if m["wall_s"] else 0.0,
            "cpu_ms_per_event": round(1000 * m["cpu_s"] / events, 3) if events else float("nan"),
            "server_cpu_ms_per_event": (round(1000 * m["server_cpu_s"] / events, 3)
                                        if events and emulators else None),
            "call_requests_per_event": (round(m["call_requests"] / events, 3)
                                        if events else float("nan")),
            **m["phases"],
            "load_avg": [round(x, 2) for x in os.getloadavg()],
            "target_p99_ms": 20.0, "cpus": os.cpu_count()}


def print_phases(r: dict[str, Any]) -> None:
    """Where the round trip went (:class:`_Phases`), and the server's CPU beside the gateway's."""
    print("  phases p50/p99: " + ", ".join(
        f"{name} {r[f'{name}_p50_ms']:.1f}/{r[f'{name}_p99_ms']:.1f} ms"
        for name in ("call", "notify", "result")))
    if r.get("server_cpu_ms_per_event") is not None:
        print(f"  server CPU {r['server_cpu_ms_per_event']:.2f} ms per event; "
              f"{r['call_requests_per_event']:.2f} CallRequests per event; load average "
              f"{r['load_avg'][0]:.2f} on {r['cpus']} CPUs")
