"""A burst of rejected (forged or replayed) messages, escalated by a multi-process host.

* the sans-io detector (agents/escalation/burst.py), table-driven and against
  the virtual-time driver's original rule (a list of times in the window);
* the ``escalate`` body, as both raisers build it;
* a whole small cell in one process on real ZeroMQ sockets with real keys —
  the simulator, the three hosts, and the console agent started a moment
  after the burst (so the host's re-send is what gets through): a forger
  socket sends garbage and wrongly signed envelopes to the machines host,
  the escalation lands in the console store raised by ``host-machines``,
  the honest traffic keeps flowing and both orders complete, and a decision
  taken through the CLI twin reaches the host, which logs it;
* without a ``host-NAME`` certificate the host runs with the rule off and
  says so once;
* real processes (slow): ``autocell up`` of the small cell, a forger socket
  at the machines host, the escalation in the store, a decision through the
  CLI twin in a subprocess reaching the host, the run completing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import random
import time
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq
from helpers.escalation_cells import faults, small_cell
from helpers.console_users import act_as
from helpers.waiting import (
    CELL_RUN_BOUND_S,
    EVENT_BOUND_S,
    PROCESS_BOUND_S,
    NotYet,
    until,
    wait_until,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.escalation.burst import BurstDetector, reject_burst_escalation
from agents.escalation.policy import Rule
from agents.escalation.store import EscalationStore
from agents.protocol.envelope import Sealer
from agents.protocol.messages import Heartbeat
from agents.runtime.console_service import ConsoleService, console_policy
from agents.runtime.host import CellClock, Host, host_identity
from ops.cli import main
from ops.config import load_cell
from ops.config.fault_files import load_faults
from security.crypto import SigningKey
from security.keystore import KeyDir
from sim_bridge.remote import PlantServer

# -- the detector -----------------------------------------------------------------------------

@pytest.mark.parametrize(("times", "starts"), [
    ([0, 1, 2], [2]),                          # the third within 10 s starts it
    ([0, 1, 2, 3, 4, 5], [2]),                 # one escalation per burst
    ([0, 5, 10.5], []),                        # 0 left the window (t > now - window_s)
    ([0, 5, 9.9], [9.9]),
    ([0, 1, 2, 30, 31, 32], [2, 32]),          # rate fell below: re-armed at 30
    ([0, 1, 2, 3, 10, 11, 12], [2]),           # never fewer than three in 10 s: one
    ([0, 1, 2, 3, 13.5, 14, 15], [2, 15]),     # 13.5 alone in its window: re-armed
])
def test_detector_says_when_a_burst_starts(times: list[float], starts: list[float]) -> None:
    d = BurstDetector(3, 10.0)
    assert [t for t in times if d.observe(t)] == starts


def test_a_detector_needs_a_count_and_a_window() -> None:
    with pytest.raises(ValueError, match="count >= 1"):
        BurstDetector(0, 10.0)
    with pytest.raises(ValueError, match="window_s > 0"):
        BurstDetector(3, 0.0)


class _ListRule:
    """The virtual-time driver's rule before the detector existed (sim_bridge/virtual.py)."""

    def __init__(self, count: int, window_s: float) -> None:
        self.count, self.window_s, self.times, self.open = count, window_s, [], False

    def observe(self, now: float) -> bool:
        self.times = [t for t in self.times if t > now - self.window_s] + [now]
        if len(self.times) < self.count:
            self.open = False
            return False
        if self.open:
            return False
        self.open = True
        return True


@settings(deadline=None)     # a loaded machine must not fail an example by its wall time
@given(count=st.integers(1, 6), window_s=st.floats(0.5, 20.0),
       gaps=st.lists(st.floats(0.0, 8.0), min_size=1, max_size=80))
def test_detector_keeps_the_virtual_drivers_semantics(count: int, window_s: float,
                                                      gaps: list[float]) -> None:
    d, ref, now = BurstDetector(count, window_s), _ListRule(count, window_s), 0.0
    for gap in gaps:
        now += gap
        assert d.observe(now) == ref.observe(now), (now, ref.times)


def test_the_escalation_offers_continue_and_investigate_with_counts_by_reason() -> None:
    body = reject_burst_escalation(Rule(1, 60.0, 20), escalation="host-machines/reject_burst/7.5",
                                   now=7.5, resource="machines",
                                   rejected_by_reason={"malformed": 3, "bad_signature": 17})
    assert (body.cause, body.priority, body.resource, body.safe_default) == (
        "reject_burst", 1, "machines", "continue")
    assert [o["id"] for o in body.options] == ["continue", "investigate"]
    assert body.context == {"rejected_by_reason": {"bad_signature": 17, "malformed": 3},
                            "detected_at": 7.5, "process": "machines"}
    assert body.consequence.startswith("20 messages rejected within 60 s by machines")


# -- a whole cell on real ZeroMQ --------------------------------------------------------------

#: A forger's socket keeps its queued frames this long after close (the hang guard), so
#: a loaded machine that has not finished connecting yet still delivers every forgery.
FORGER_LINGER_MS = int(EVENT_BOUND_S * 1000)


def _forgeries(n: int) -> list[list[bytes]]:
    """Half garbage, half envelopes signed by a key the cell never certified, posing as
    ``mill1``'s peers (``o-001``): malformed and bad_signature at the receiver."""
    impostor = Sealer("o-001", SigningKey.generate(), epoch=1,
                      random_bytes=random.Random(7).randbytes)
    out: list[list[bytes]] = []
    for i in range(n):
        if i % 2:
            out.append([b"o-001", msgpack.packb({"junk": i})])        # two frames
        else:
            out.append(impostor.seal("mill1", Heartbeat(), time.time(), ""))
    return out


def _events(state: Path, name: str) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (state / f"events-{name}.jsonl").read_text().splitlines()]


@pytest.mark.timeout(600)     # several events in a row, each under the shared hang guard
def test_a_forged_burst_at_a_host_is_escalated_decided_and_the_cell_keeps_working(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    act_as(monkeypatch, tmp_path, "alice")      # the CLI twin acts for a console user
    cell = small_cell(tmp_path, reject_burst={"count": 10, "window_s": 600})
    cfg = load_cell(cell)
    scenario = load_faults(faults(tmp_path), cfg)      # no random breakdowns
    state = tmp_path / "state"
    state.mkdir()
    from ops.supervisor import ensure_keys

    keys = ensure_keys(cfg, state)
    policy = console_policy(cfg, keys)
    assert policy.reject_burst == Rule(1, 600.0, 10)
    db = state / "escalations.db"
    clock = CellClock(time.time() + 0.5, 50.0)
    machines_ep = next(h.endpoint for h in cfg.hosts if h.name == "machines")

    async def run() -> None:
        sim = PlantServer(cfg, keys_dir=keys, state_dir=state, clock=clock, faults=scenario)
        hosts = {h.name: Host(cfg, h.name, keys_dir=keys, state_dir=state, clock=clock,
                              faults=scenario, escalation=policy, burst_resend_s=0.3)
                 for h in cfg.hosts}
        tasks = [asyncio.create_task(p.run()) for p in (sim, *hosts.values())]
        machines = hosts["machines"]
        await until("the machines host on the bus", lambda: machines.bus.stats.received)

        forger = zmq.Context.instance().socket(zmq.PUSH)
        forger.setsockopt(zmq.LINGER, FORGER_LINGER_MS)
        forger.connect(machines_ep)
        for frames in _forgeries(14):
            forger.send_multipart(frames)
        forger.close()
        await until("the burst", lambda: machines.bursts_open)
        # the burst opens at the 10th reject; the other 4 may still be on their way
        rejected = machines.bus.stats.rejected
        await until("all 14 forgeries rejected", lambda: (
            rejected["malformed"] >= 7 and rejected["bad_signature"] >= 7) or NotYet(
                dict(rejected)))

        # the console comes up only now: the host's re-send brings the escalation in.
        # This sleep is the scenario (a console that comes up late), not a wait.
        await asyncio.sleep(0.5)
        console = ConsoleService(cfg, keys_dir=keys, state_dir=state, clock=clock, db_path=db,
                                 look_every_s=0.05)
        tasks.append(asyncio.create_task(console.run()))
        reader = EscalationStore(db)
        [esc] = await until("the escalation in the store", lambda: [
            r.id for r in reader.list() if r.cause == "reject_burst"])
        rec = reader.get(esc)
        assert rec.raised_by == host_identity("machines") == "host-machines"
        assert esc.startswith("host-machines/reject_burst/")
        assert (rec.resource, rec.safe_default, rec.priority) == ("machines", "continue", 1)
        assert set(rec.context["rejected_by_reason"]) >= {"malformed", "bad_signature"}

        # a person decides through the CLI twin; the console sends it to host-machines
        assert main(["escalations", "decide", esc, "--option", "investigate", "--reason",
                     "IT looks at port 5602", "--user", "alice", "--db", str(db)]) == 0
        await until("the decision at the host", lambda: not machines.bursts_open)

        # the honest traffic kept flowing: both orders complete
        await until("both orders completed", lambda: sum(
            len(h.status()["completed"]) for h in hosts.values()) == 2)
        assert machines.status()["reject_bursts"] == {
            "identity": "host-machines", "raised": 1, "open": []}
        assert reader.get(esc).decided_by == "alice"
        reader.close()
        for p in (sim, *hosts.values(), console):
            p._stop.set()
        await asyncio.gather(*tasks)
        assert sum(console.bus.stats.rejected.values()) == 0  # nothing refused on the way

    asyncio.run(run())
    ev = _events(state, "machines")
    [raised] = [e for e in ev if e["ev"] == "reject_burst_escalated"]
    assert (raised["identity"], raised["count"], raised["window_s"]) == (
        "host-machines", 10, 600.0)
    [decided] = [e for e in ev if e["ev"] == "reject_burst_decision"]
    assert (decided["escalation"], decided["option"], decided["user"], decided["raised_here"]
            ) == (raised["escalation"], "investigate", "alice", True)
    assert decided["t"] > raised["t"]
    assert not [e for e in _events(state, "orders") if e["ev"] == "reject_burst_escalated"]


def test_ensure_keys_issues_each_host_an_identity_of_its_own(tmp_path: Path) -> None:
    from ops.supervisor import ensure_keys

    cfg = load_cell(small_cell(tmp_path))
    keys = ensure_keys(cfg, tmp_path / "state")
    kd = KeyDir(keys)
    for h in cfg.hosts:
        _, cert = kd.identity(host_identity(h.name))
        assert (cert.agent, cert.role) == (f"host-{h.name}", "host")


def test_without_its_certificate_a_host_runs_with_reject_burst_off_and_says_so(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from ops.supervisor import ensure_keys

    cfg = load_cell(small_cell(tmp_path))
    state = tmp_path / "state"
    keys = ensure_keys(cfg, state)
    (keys / "agents" / "host-machines.cert").unlink()
    policy = console_policy(cfg, keys)
    assert policy.reject_burst is not None
    clock = CellClock(time.time(), 1.0)
    with caplog.at_level(logging.WARNING, logger="autocell.host"):
        off = Host(cfg, "machines", keys_dir=keys, state_dir=state, clock=clock,
                   escalation=policy)
        on = Host(cfg, "logistics", keys_dir=keys, state_dir=state, clock=clock,
                  escalation=policy)
    said = [r.getMessage() for r in caplog.records if "reject-burst" in r.getMessage()]
    assert len(said) == 1 and "host machines" in said[0]
    assert "autocell keys issue host-machines --role host" in said[0]
    assert off.bus.rejects.listener is None and "host-machines" not in off.bus.local_agents
    assert on.bus.rejects.listener is not None and "host-logistics" in on.bus.local_agents
    # the rule switched off in the cell: no identity, no word about it
    caplog.clear()
    quiet = Host(cfg, "orders", keys_dir=keys, state_dir=state, clock=clock,
                 escalation=dataclasses.replace(policy, reject_burst=None))
    assert quiet.bus.rejects.listener is None and not caplog.records
    for h in (off, on, quiet):
        h.journal.close()
        h.events.close()


# -- real processes (slow) ----------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.timeout(600)     # several events in a row, each under the shared hang guard
def test_up_host_escalates_a_forged_burst_and_hears_the_cli_decision(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    act_as(monkeypatch, tmp_path, "carol")
    import subprocess
    import sys

    from helpers.escalation_cells import ROOT, cli, events, records

    cell = small_cell(tmp_path, reject_burst={"count": 10, "window_s": 600})
    cfg = load_cell(cell)
    state = tmp_path / "state"
    db = state / "escalations.db"
    machines_ep = next(h.endpoint for h in cfg.hosts if h.name == "machines")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ops.cli", "up", str(cell), "--speed", "20", "--state-dir",
         str(state), "--timeout", f"{CELL_RUN_BOUND_S:g}", "--faults", str(faults(tmp_path))],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until("the machines host running", lambda: (
            state / "status-machines.json").exists() and json.loads(
                (state / "status-machines.json").read_text())["cell_now"] > 0)
        forger = zmq.Context.instance().socket(zmq.PUSH)
        forger.setsockopt(zmq.LINGER, FORGER_LINGER_MS)
        forger.connect(machines_ep)
        for frames in _forgeries(14):
            forger.send_multipart(frames)
        forger.close()
        esc = wait_until("the burst in the console's store", lambda: [
            r for r in records(db).values() if r.cause == "reject_burst"])[0]
        assert (esc.raised_by, esc.resource, esc.safe_default) == (
            "host-machines", "machines", "continue")
        res = cli("escalations", "decide", esc.id, "--option", "investigate",
                  "--user", "carol", "--db", str(db))
        assert res.returncode == 0, res.stderr
        wait_until("the decision at the host", lambda: [
            e for e in events(state, "machines") if e["ev"] == "reject_burst_decision"])
    finally:
        try:
            _out, err = proc.communicate(timeout=PROCESS_BOUND_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            _out, err = proc.communicate()
    assert proc.returncode == 0, err[-3000:]
    report = json.loads((state / "report.json").read_text())
    assert report["orders_completed"] == report["orders_total"] == 2
    assert all(report["invariants"].values())
    assert report["escalations_by_cause"] == {"reject_burst": 1}
    [decided] = [e for e in events(state, "machines") if e["ev"] == "reject_burst_decision"]
    assert (decided["escalation"], decided["option"], decided["user"]) == (
        esc.id, "investigate", "carol")
    st = json.loads((state / "status-machines.json").read_text())
    assert st["reject_bursts"] == {"identity": "host-machines", "raised": 1, "open": []}
    assert st["rejected"]["bad_signature"] >= 7 and st["rejected"]["malformed"] >= 7


# -- the host's burst watch in virtual time, through the runner -------------------------------

def test_a_host_burst_is_raised_resent_until_decided_in_virtual_time() -> None:
    """What a ZeroMQ host does on a burst (BurstWatch on its runner), in virtual time on the
    fake link: the first escalate is lost, the raiser re-sends it, the console records it,
    a supervisor's decision reaches host-NAME and the re-sending stops.  ``replayed``
    refusals inside the grace window never count."""
    from helpers.fake_link import FakeLink

    from agents.base import Timing
    from agents.escalation.burst import BurstWatch
    from agents.escalation.console import CONSOLE_ID, ConsoleAgent

    store = EscalationStore(":memory:")
    console = ConsoleAgent(CONSOLE_ID, timing=Timing(), store=store)
    watch = BurstWatch("host-machines", rule=Rule(1, 60.0, 5), console=CONSOLE_ID,
                       resend_s=10.0, process="machines", grace_until_at=30.0,
                       timing=Timing())
    link = FakeLink([watch, console]).start()
    counts: dict[str, int] = {}

    def reject(reason: str) -> None:
        counts[reason] = counts.get(reason, 0) + 1
        link.runner.execute(watch.id, watch.on_reject(reason, link.now, counts), link.now)

    for _ in range(8):                    # a restart's refusals: inside the grace, no burst
        reject("replayed")
        link.advance(1.0)
    assert not watch.raiser.open and not link.sent_of("escalate")
    link.advance(30.0)
    for _ in range(5):                    # five forgeries within the window: a burst
        reject("bad_signature")
        link.advance(1.0)
    [esc] = watch.raiser.open
    assert esc.startswith("host-machines/reject_burst/")
    link.drop(0)                          # the first escalate is lost
    assert not store.list()
    link.advance(10.0)                    # the raiser sends it again
    link.deliver_all()
    [rec] = store.list()
    assert (rec.id, rec.cause, rec.raised_by, rec.resource) == (
        esc, "reject_burst", "host-machines", "machines")
    assert rec.context["rejected_by_reason"] == {"bad_signature": 5, "replayed": 8}
    link.runner.execute(CONSOLE_ID, console.decide(esc, "alice", "investigate", "IT", link.now),
                        link.now)
    link.deliver_all()
    assert not watch.raiser.open
    [(_, decided)] = link.log_events("reject_burst_decision")
    assert (decided.fields["option"], decided.fields["user"], decided.fields["raised_here"]) == (
        "investigate", "alice", True)
    sent = len(link.sent_of("escalate"))
    link.advance(100.0)
    assert len(link.sent_of("escalate")) == sent     # decided: no more re-sends
