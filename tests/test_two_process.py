"""A real exchange between OS processes over ZeroMQ TCP, with signing on.

Keys come from the real ``autocell keys`` CLI.  A receiver process hosts
order ``rx``; an honest machine ``honest`` sends proposals; a forger holding
a valid key and certificate for its *own* id ``forger`` (role machine)
signs envelopes that claim to come from ``honest``, and also sends, as
itself, ``cfp`` messages that only orders may send.  The receiver must
deliver every honest message, none of the forger's, and count the rejects
by reason.  All waits are bounded; children are killed in ``finally``.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from helpers.waiting import PROCESS_BOUND_S, NotYet, wait_until

HELPER = Path(__file__).parent / "helpers" / "peer.py"
HONEST, FORGED_AS_HONEST, FORBIDDEN = 300, 60, 15


def autocell() -> str:
    exe = Path(sys.executable).with_name("autocell")
    assert exe.exists(), "the autocell console script is not installed (pip install -e .)"
    return str(exe)


class Child:
    """A child process whose stdout lines are read by a thread (so waits can be bounded)."""

    def __init__(self, *argv: str) -> None:
        self.proc = subprocess.Popen([sys.executable, str(HELPER), *argv], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def read(self, timeout_s: float = PROCESS_BOUND_S) -> dict[str, Any]:
        try:
            return json.loads(self.lines.get(timeout=timeout_s))
        except queue.Empty:
            raise AssertionError(f"no answer from {self.proc.args}; stderr: {self.stderr()}") from None

    def tell(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def wait(self, timeout_s: float = PROCESS_BOUND_S) -> int:
        code = self.proc.wait(timeout=timeout_s)
        assert code == 0, f"{self.proc.args} exited {code}: {self.stderr()}"
        return code

    def stderr(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None:
            return "(still running)"
        return self.proc.stderr.read()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    d = tmp_path / "keys"
    for argv in (["init"], ["issue", "rx", "--role", "order"],
                 ["issue", "honest", "--role", "machine"], ["issue", "forger", "--role", "machine"]):
        r = subprocess.run([autocell(), "keys", *argv, "--dir", str(d)], capture_output=True,
                           text=True, timeout=PROCESS_BOUND_S)
        assert r.returncode == 0, r.stderr
    return d


@pytest.mark.timeout(600)     # several events in a row, each under the shared hang guard
def test_two_process_exchange_rejects_the_forger(keys: Path) -> None:
    children: list[Child] = []
    try:
        rx = Child("receive", "--keys", str(keys), "--agent", "rx")
        children.append(rx)
        endpoint = rx.read()["endpoint"]
        assert endpoint.startswith("tcp://127.0.0.1:")

        def sender(key_of: str, claim: str, count: int, body: str, tag: str) -> Child:
            child = Child("send", "--keys", str(keys), "--key-of", key_of, "--claim", claim,
                          "--to", "rx", "--endpoint", endpoint, "--count", str(count),
                          "--body", body, "--tag", tag)
            children.append(child)
            return child

        senders = [
            sender("honest", "honest", HONEST, "proposal", "honest"),
            sender("forger", "honest", FORGED_AS_HONEST, "proposal", "forged"),
            sender("forger", "forger", FORBIDDEN, "cfp", "forbidden"),
        ]
        for child in senders:
            child.wait()

        want_rejects = {"bad_signature": FORGED_AS_HONEST, "forbidden": FORBIDDEN}

        def settled() -> dict[str, Any] | NotYet:
            rx.tell("stats")
            s = rx.read()
            done = len(s["received"]) >= HONEST and s["rejected"] == want_rejects
            return s if done else NotYet({k: len(v) if k == "received" else v
                                          for k, v in s.items()})

        stats = wait_until(f"{HONEST} messages received and {want_rejects} rejected at rx",
                           settled)
        received = stats["received"]
        assert stats["rejected"] == want_rejects
        assert Counter((s, t) for s, t, _, _ in received) == Counter({("honest", "propose"): HONEST})
        assert sorted(task for _, _, task, _ in received) == sorted(f"honest/{i}" for i in range(HONEST))
        assert not [r for r in received if not r[2].startswith("honest/")]   # nothing forged got in
        assert stats["handler_errors"] == 0
        rx.tell("quit")
        rx.wait()
    finally:
        for child in children:
            child.kill()


MULTICASTS = 200


@pytest.mark.timeout(600)     # several events in a row, each under the shared hang guard
def test_one_multicast_reaches_bidders_in_two_processes(tmp_path: Path) -> None:
    """Order ``o`` seals each cfp once for ``b1, b2`` (process 1) and ``b3`` (process 2)."""
    d = tmp_path / "keys"
    for argv in (["init"], ["issue", "o", "--role", "order"],
                 *(["issue", b, "--role", "machine"] for b in ("b1", "b2", "b3"))):
        r = subprocess.run([autocell(), "keys", *argv, "--dir", str(d)], capture_output=True,
                           text=True, timeout=PROCESS_BOUND_S, check=False)
        assert r.returncode == 0, r.stderr
    children: list[Child] = []
    try:
        rx1 = Child("receive", "--keys", str(d), "--agent", "b1,b2")
        rx2 = Child("receive", "--keys", str(d), "--agent", "b3")
        children += [rx1, rx2]
        ep1, ep2 = rx1.read()["endpoint"], rx2.read()["endpoint"]
        tx = Child("send", "--keys", str(d), "--key-of", "o", "--claim", "o", "--to", "b1,b3,b2",
                   "--endpoint", f"{ep1},{ep2},{ep1}", "--count", str(MULTICASTS), "--body",
                   "cfp", "--tag", "mc", "--multicast")
        children.append(tx)
        tx.wait()

        def stats(rx: Child, want: int) -> dict[str, Any]:
            def received() -> dict[str, Any] | NotYet:
                rx.tell("stats")
                s = rx.read()
                return s if len(s["received"]) >= want else NotYet(len(s["received"]))

            return wait_until(f"{want} messages received by {rx.proc.args[-1]}", received)

        s1, s2 = stats(rx1, 2 * MULTICASTS), stats(rx2, MULTICASTS)
        for s, agents in ((s1, ["b1", "b2"]), (s2, ["b3"])):
            assert s["rejected"] == {} and s["handler_errors"] == 0
            assert s["multicast_received"] == MULTICASTS       # one envelope per host per cfp
            assert len(s["received"]) == len(agents) * MULTICASTS
            # one Message per local addressee, in the envelope's order, same seq for all
            assert s["to"] == [a for _ in range(MULTICASTS) for a in agents]
            assert [int(r[3]) for r in s["received"]] == [
                i + 1 for i in range(MULTICASTS) for _ in agents]
            assert {(r[0], r[1]) for r in s["received"]} == {("o", "cfp")}
        # the very same envelopes (one seq each) reached both processes
        assert {r[3] for r in s1["received"]} == {r[3] for r in s2["received"]}
        for rx in (rx1, rx2):
            rx.tell("quit")
            rx.wait()
    finally:
        for child in children:
            child.kill()
