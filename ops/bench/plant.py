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
(one session) are commanded together in each round.  The gateway's CPU per
event is this process's CPU time over the run divided by the events.

Target (issue 14): p99 ≤ 20 ms at 50 machines.  A job's end reaches the
gateway as a data change, so the server's fastest publishing interval is a
floor of the round trip: node-opcua's is 50 ms (``ServerSubscription.
minimumPublishingInterval``), asyncua's server honours the 5 ms asked for.
"""

from __future__ import annotations

import asyncio
import json
import os
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
from sim_bridge.opcua.backend import OpcUaBackend, OpcUaMachine
from sim_bridge.opcua.pki import OpcUaPki

ROOT = Path(__file__).resolve().parents[2]
EMULATOR = ROOT / "tests" / "opcua" / "machine_emulator.mjs"
READY_BOUND_S = 120.0


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


async def _measure(endpoint: str, pki: OpcUaPki, machines: list[str], rounds: int,
                   progress: Callable[[str], None],
                   profile: str = "machinery-jobs") -> dict[str, Any]:
    sent: dict[str, float] = {}
    samples: list[float] = []
    done = asyncio.Event()
    pending: set[str] = set()
    refused: list[str] = []

    def emit(ev: PlantEventIn) -> None:
        if ev.event == "operation_done" and ev.task in sent:
            samples.append(time.perf_counter() - sent.pop(ev.task))
            pending.discard(ev.task)
        elif ev.event in ("command_refused", "fault"):
            refused.append(f"{ev.event} {ev.resource} {ev.data}")
            pending.discard(ev.task)
        if not pending:
            done.set()

    specs = [MachineSpec(m, location="bench") for m in machines]
    gateway = PlantGateway(specs, [], emit=emit, record=lambda *_a, **_k: None)
    settings = OpcUaEquipment(endpoint=endpoint, profile=profile)
    backend = OpcUaBackend([OpcUaMachine(m, settings) for m in machines],
                           events=gateway, record=lambda *_a, **_k: None, pki=pki, secrets={})
    gateway.attach(backend)
    await backend.start(first_connect_s=60.0)
    if not all(backend.query_state(m) for m in machines):
        raise RuntimeError(f"the gateway did not connect: {backend.status()}")
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for r in range(rounds + 1):            # round 0 warms up (first calls, type caches)
        done.clear()
        for m in machines:
            task = f"{m}-r{r}"
            pending.add(task)
            sent[task] = time.perf_counter()
            gateway.command(Command("start_operation", m, task,
                                    {"duration_s": 0.0, "award_epoch": 1, "order": "bench"}))
        await asyncio.wait_for(done.wait(), 60.0)
        if r == 0:
            samples.clear()
            cpu0, wall0 = time.process_time(), time.perf_counter()
        if (r + 1) % max(1, rounds // 5) == 0:
            progress(f"round {r}/{rounds}")
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    await backend.close()
    if refused:
        raise RuntimeError(f"the server refused: {refused[:3]}")
    return {"samples": samples, "cpu_s": cpu, "wall_s": wall}


def run(machines: int = 1, rounds: int = 50, endpoint: str | None = None,
        progress: Callable[[str], None] = lambda _s: None, stack: str = "node",
        profile: str = "machinery-jobs") -> dict[str, Any]:
    """One configuration: ``machines`` machines on one gateway, ``rounds`` rounds; with
    ``profile`` ``packml`` they are the node-opcua emulator's PackML units (a round trip is
    then Start to Complete, and the Reset before the next round is inside it)."""
    with tempfile.TemporaryDirectory(prefix="autocell-bench-plant-") as tmp:
        work = Path(tmp)
        pki = OpcUaPki(work / "gateway")
        pki.ensure_own()
        ids = [f"m{i + 1:02d}" for i in range(machines)]
        emulator = None
        if endpoint is None:
            units = profile == "packml"
            emulator = Emulator(work / "server", [] if units else ids, trust_client=pki.cert_path,
                                stack=stack, extra=["--packml", ",".join(ids)] if units else None)
        try:
            if emulator is not None:
                endpoint = emulator.wait_ready(progress)
                pki.trust(emulator.server_cert)
            assert endpoint is not None
            m = asyncio.run(_measure(endpoint, pki, ids, rounds, progress, profile))
        finally:
            if emulator is not None:
                emulator.stop()
    samples_ms = [s * 1000 for s in m["samples"]]
    events = len(samples_ms)
    return {"backend": "opcua", "profile": profile, "machines": machines, "rounds": rounds, "jobs": events,
            "server": "endpoint" if emulator is None else f"{stack} emulator",
            "security": "Basic256Sha256/SignAndEncrypt",
            "p50_ms": round(_percentile(samples_ms, 0.50), 3),
            "p99_ms": round(_percentile(samples_ms, 0.99), 3),
            "max_ms": round(max(samples_ms), 3) if samples_ms else float("nan"),
            "events_per_s": round(events / m["wall_s"], 1) if m["wall_s"] else 0.0,
            "cpu_ms_per_event": round(1000 * m["cpu_s"] / events, 3) if events else float("nan"),
            "target_p99_ms": 20.0, "cpus": os.cpu_count()}
