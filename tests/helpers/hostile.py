"""The hostile-input corpus of issue 20: one case per damaged or hostile input, by class.

Each :class:`Case` builds its files in a scratch directory (FIFOs, symlinks and
20 MB files cannot live in git; the small static ones are in
``tests/data/hostile/``), names the ``autocell`` command line to run, and says
what the answer must be: by default exit 2 with no traceback; ``check`` adds
what else must hold (no directory created, the file unchanged, the output
escaped).  ``tests/test_hostile_corpus.py`` runs every case in-process;
``python tests/helpers/hostile.py`` runs every case in a subprocess with a
time limit and counts, per class, how many gave a traceback, hung or were
accepted — run it with ``PYTHONPATH`` set to another checkout to count there.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "hostile"
DEMO = ROOT / "cell_configs" / "demo_cell.yaml"
FAULTS = ROOT / "cell_configs" / "faults" / "breakdowns.yaml"
MINIMAL = ROOT / "cell_configs" / "minimal_cell.yaml"
GARBAGE = bytes(range(256)) * 20

Check = Callable[[Path, int, str], str | None]
"""(scratch dir, exit code, stdout+stderr) -> what is wrong, or None."""


@dataclass(frozen=True)
class Case:
    cls: int                                   # the defect class of issue 20
    name: str
    build: Callable[[Path], list[str]]         # makes its files, returns the argv
    codes: tuple[int, ...] = (2,)              # acceptable exit codes
    check: Check | None = None
    tags: tuple[str, ...] = field(default=())


# -- builders ------------------------------------------------------------------------------

def _copy(name: str) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        target = tmp / name
        target.write_bytes((DATA / name).read_bytes())
        return target
    return make


def _deep_flow(tmp: Path) -> Path:
    path = tmp / "deep_flow.yaml"
    path.write_text("cell: x\nnested: " + "[" * 100_000 + "\n")
    return path


def _deep_block(tmp: Path) -> Path:
    path = tmp / "deep_block.yaml"
    path.write_text("".join(" " * i + f"k{i}:\n" for i in range(1500)) + " " * 1500 + "v\n")
    return path


def _big(tmp: Path) -> Path:
    path = tmp / "big.yaml"
    with path.open("w") as f:
        f.write("cell: big\nlayout:\n  locations:\n")
        f.write("  - {id: a, x: 0, y: 0}\n" * (20_000_000 // 24))
    return path


def _fifo(tmp: Path) -> Path:
    path = tmp / "fifo.yaml"
    os.mkfifo(path)
    return path


def _dev_zero(tmp: Path) -> Path:
    path = tmp / "zero.yaml"
    path.symlink_to("/dev/zero")
    return path


YAML_FILES: dict[str, Callable[[Path], Path]] = {
    "NUL byte": _copy("nul.yaml"), "BEL byte": _copy("bel.yaml"), "DEL byte": _copy("del.yaml"),
    "binary garbage": _copy("garbage.yaml"), "100 000 nested [": _deep_flow,
    "1 500 nested mappings": _deep_block, "billion laughs": _copy("bomb.yaml"),
    "20 MB file": _big, "FIFO": _fifo, "symlink to /dev/zero": _dev_zero,
}


def _yaml_cases() -> list[Case]:
    out: list[Case] = []
    for what, make in YAML_FILES.items():
        out.append(Case(1, f"cell: {what}", lambda t, m=make: ["validate", str(m(t))]))
        out.append(Case(1, f"faults: {what}",
                        lambda t, m=make: ["validate", str(DEMO), "--faults", str(m(t))]))

        def sweep(t: Path, m: Callable[[Path], Path] = make) -> list[str]:
            return ["experiment", str(m(t)), "--dry-run", "--quiet"]
        out.append(Case(1, f"sweep: {what}", sweep))
    return out


def _partition_cases() -> list[Case]:
    out = []
    for name in ("partition_list.yaml", "partition_map.yaml"):
        out.append(Case(3, f"validate --faults {name}",
                        lambda t, n=name: ["validate", str(DEMO), "--faults", str(DATA / n)],
                        check=_has_line(name)))
        out.append(Case(3, f"run --faults {name}",
                        lambda t, n=name: ["run", str(DEMO), "--quiet", "--until", "50",
                                           "--faults", str(DATA / n)],
                        check=_has_line(name)))
    return out


def _has_line(name: str) -> Check:
    def check(tmp: Path, code: int, text: str) -> str | None:
        return None if f"{name}:5:" in text else f"no {name}:LINE in the message"
    return check


# -- class 2: numbers out of range -------------------------------------------------------------

def _at_line(name: str) -> Check:
    import re

    def check(tmp: Path, code: int, text: str) -> str | None:
        return None if re.search(rf"{re.escape(name)}:\d+:", text) else f"no {name}:LINE"
    return check


def _minimal_with(edit: Callable[[dict[str, Any]], None]) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        import yaml

        data = yaml.safe_load(MINIMAL.read_text())
        edit(data)
        path = tmp / "range.yaml"
        path.write_text(yaml.safe_dump(data))
        return path
    return make


def _order(**fields: Any) -> Callable[[dict[str, Any]], None]:
    return lambda d: d["orders"][0].update(fields)


RANGES: dict[str, Callable[[dict[str, Any]], None]] = {
    "quantity 10^400": _order(quantity=10**400),
    "quantity 2^64": _order(quantity=2**64),
    "priority 2^64": _order(priority=2**64),
    "quantity true": _order(quantity=True),
    "quantity 2^53": _order(quantity=2**53),
    "release at 1e12": _order(release_at=1e12, due_at=2e12),
    "capability time 1e308": lambda d: d["machines"][0].update(capabilities={"sawing": 1e308}),
    "coordinate 1.7e308": lambda d: d["layout"]["locations"][0].update(x=-1.7e308),
    "heartbeat 1 µs, lease 10 µs": lambda d: d.update(
        negotiation={"heartbeat_interval_s": 1e-6, "lease_s": 1e-5}),
    "reply deadline 1e300": lambda d: d.update(negotiation={"reply_deadline_s": 1e300}),
    "a machine down for ever": lambda d: d["machines"][0].update(mtbf_s=10, mttr_s=1e300),
    "sim.metrics_port an endpoint's port": lambda d: d.update(sim={"metrics_port": 5601}),
}


def _pause_for_ever(tmp: Path) -> list[str]:
    path = tmp / "pause.yaml"
    path.write_text("name: stuck\nhosts:\n  - {host: main, action: pause, at_s: 1, "
                    "duration_s: 1.0e+300}\n")
    return ["validate", str(MINIMAL), "--faults", str(path)]


def _huge_fjs(tmp: Path) -> list[str]:
    path = tmp / "huge.fjs"
    path.write_text("1 2\n1 1 1 " + "9" * 400 + "\n")
    return ["run", str(path), "--quiet"]


def _million_runs(tmp: Path) -> list[str]:
    import yaml

    path = tmp / "sweep.yaml"
    path.write_text(yaml.safe_dump({
        "name": "huge", "cells": [str(MINIMAL)], "seeds": list(range(1000)),
        "grid": {"negotiation.reply_deadline_s": [0.1 + i / 10_000 for i in range(1000)]}}))
    return ["experiment", str(path), "--dry-run", "--quiet"]


def _range_cases() -> list[Case]:
    out = [Case(2, f"cell: {what}", lambda t, e=edit: ["validate", str(_minimal_with(e)(t))],
                check=_at_line("range.yaml")) for what, edit in RANGES.items()]
    out += [Case(2, f"run: {what}", lambda t, e=edit: ["run", str(_minimal_with(e)(t)),
                                                      "--quiet"],
                 check=_at_line("range.yaml"))
            for what, edit in RANGES.items() if what in ("priority 2^64", "quantity 2^53")]
    out += [
        Case(2, "faults: a pause that never ends", _pause_for_ever, check=_at_line("pause.yaml")),
        Case(2, ".fjs: a 400-digit time", _huge_fjs, check=_at_line("huge.fjs")),
        Case(2, "run --until nan", lambda t: ["run", str(MINIMAL), "--quiet", "--until", "nan"]),
        Case(2, "run --seed -1", lambda t: ["run", str(MINIMAL), "--quiet", "--seed", "-1"]),
        Case(2, "chaos --seeds -3", lambda t: ["chaos", str(MINIMAL), "--quiet", "--seeds", "-3"]),
        Case(2, "a sweep of 1 000 000 runs --dry-run", _million_runs,
             check=lambda t, c, text: None if "1,000,000 runs" in text else "no run count"),
    ]
    return out


# -- class 4: output paths -----------------------------------------------------------------

def _no_dir(rel: str) -> Check:
    def check(tmp: Path, code: int, text: str) -> str | None:
        return f"created {rel}" if (tmp / rel).exists() else None
    return check


def _output_cases() -> list[Case]:
    run = ["run", str(DEMO), "--quiet", "--until", "200"]
    chaos = ["chaos", str(DEMO), "--seed", "1", "--orders", "2", "--quiet"]
    flags: list[tuple[str, list[str], str]] = [
        ("run --report", run, "--report"), ("run --events", run, "--events"),
        ("run --escalations-db", run, "--escalations-db"),
        ("chaos --write", chaos, "--write"), ("chaos --report", chaos, "--report"),
        ("schema --out", ["schema"], "--out"),
        ("ops prometheus-config --out", ["ops", "prometheus-config", str(DEMO)], "--out"),
        ("ops prometheus-rules --out", ["ops", "prometheus-rules", str(DEMO)], "--out"),
    ]
    out = [Case(4, "users add --users into a missing directory",
                lambda t: ["users", "add", "ann", "--role", "viewer", "--password-stdin",
                           "--users", str(t / "missing" / "users.db")],
                check=_no_dir("missing"))]
    for name, argv, flag in flags:
        out.append(Case(4, f"{name} into a missing directory",
                        lambda t, a=argv, f=flag: [*a, f, str(t / "missing" / "out.file")],
                        check=_no_dir("missing")))
        out.append(Case(4, f"{name} at a directory",
                        lambda t, a=argv, f=flag: [*a, f, str(t)]))
    return out


# -- class 6: keys and certificates ----------------------------------------------------------

def _keys(tmp: Path) -> Path:
    from security.keystore import KeyDir

    kd = KeyDir(tmp / "keys")
    kd.init(time.time())
    kd.issue("m1", "machine", time.time())
    return kd.root


def _cert_case(name: str, edit: Callable[[dict[str, object]], None] | bytes) -> Case:
    def build(tmp: Path) -> list[str]:
        root = _keys(tmp)
        path = root / "agents" / "m1.cert"
        if isinstance(edit, bytes):
            path.write_bytes(edit)
        else:
            data = json.loads(path.read_text())
            edit(data)
            path.write_text(json.dumps(data))
        return ["keys", "show", "m1", "--dir", str(root)]
    return Case(6, f"certificate: {name}", build, check=_names("m1.cert"))


def _names(file: str) -> Check:
    def check(tmp: Path, code: int, text: str) -> str | None:
        return None if file in text else f"the message does not name {file}"
    return check


def _set(key: str, value: object) -> Callable[[dict[str, object]], None]:
    return lambda data: data.__setitem__(key, value)


def _authority_key_case(name: str, make: Callable[[Path], None]) -> Case:
    def build(tmp: Path) -> list[str]:
        root = _keys(tmp)
        key = root / "authority.key"
        key.unlink()
        make(key)
        return ["keys", "issue", "m2", "--role", "machine", "--dir", str(root)]
    return Case(6, f"authority key: {name}", build, check=_names("authority.key"))


def _fifo_0600(path: Path) -> None:
    os.mkfifo(path, 0o600)


def _key_cases() -> list[Case]:
    out = [
        _cert_case("not UTF-8", b'{"format": "autocell-cert/1", "agent": "\xff\xfe"}'),
        _cert_case("100 000 nested [", b"[" * 100_000),
        _cert_case('serial "x"', _set("serial", "x")),
        _cert_case("serial null", _set("serial", None)),
        _cert_case("serial [1]", _set("serial", [1])),
        _cert_case('not_after_at "yesterday"', _set("not_after_at", "yesterday")),
        _cert_case("not_after_at {}", _set("not_after_at", {})),
        _cert_case("serial 10^30", _set("serial", 10**30)),
        _cert_case("not_after_at 1e300", _set("not_after_at", 1e300)),
        _authority_key_case("symlink loop", lambda p: p.symlink_to(p.name)),
        _authority_key_case("directory", lambda p: p.mkdir()),
        _authority_key_case("FIFO", _fifo_0600),
    ]

    def tls(make_cert: Callable[[Path], None]) -> Callable[[Path], list[str]]:
        def build(tmp: Path) -> list[str]:
            cert = tmp / "console.pem"
            make_cert(cert)
            (tmp / "console.key").write_text("not a key\n")
            return ["console", "--demo", "--port", "1", "--users", str(tmp / "users.db"),
                    "--tls-cert", str(cert), "--tls-key", str(tmp / "console.key")]
        return build
    out += [
        Case(6, "console --tls-cert a FIFO", tls(_fifo_0600), check=_names("console.pem")),
        Case(6, "console --tls-cert a directory", tls(lambda p: p.mkdir()),
             check=_names("console.pem")),
        Case(6, "console --tls-cert garbage", tls(lambda p: p.write_bytes(GARBAGE)),
             check=_names("console.pem")),
    ]

    def below_file(tmp: Path) -> list[str]:
        (tmp / "plain").write_text("x")
        return ["keys", "init", "--dir", str(tmp / "plain" / "keys")]
    out.append(Case(6, "keys init --dir below a regular file", below_file))
    out.append(Case(6, "keys init --dir /dev/null", lambda t: ["keys", "init", "--dir",
                                                               "/dev/null"]))
    for days in ("nan", "inf", "1e308"):
        out.append(Case(6, f"keys issue --valid-days {days}",
                        lambda t, d=days: ["keys", "issue", "m2", "--role", "machine",
                                           "--valid-days", d, "--dir", str(_keys(t))]))
    return out


# -- class 8: audit verify -----------------------------------------------------------------------

def _store(tmp: Path) -> Path:
    from agents.escalation import lifecycle as lc
    from agents.escalation.store import EscalationStore

    deadlines = lc.Deadlines(response_s=60.0, reescalate_every_s=30.0, final_s=300.0,
                             max_shelve_s=100.0)
    options = [lc.Option("wait", "Wait", "later"), lc.Option("cancel", "Cancel", "gone")]
    path = tmp / "esc.db"
    store = EscalationStore(path, deadlines)
    for i, now in ((1, 10.0), (2, 20.0)):
        rec = lc.new_record(id=f"o{i}/e1", priority=2, cause="no_capable_resource",
                            consequence="waits", raised_by=f"o{i}", now=now, options=options,
                            safe_default="wait", deadlines=deadlines, order=f"o{i}",
                            resource="lathe1")
        store.put(rec, actor=f"agent:o{i}", action="raise", now=now, details={})
    store.acknowledge("o1/e1", "alice", 30.0)
    store.close()
    return path


def _tampered(*sql: str) -> Callable[[Path], list[str]]:
    def build(tmp: Path) -> list[str]:
        path = _store(tmp)
        con = sqlite3.connect(path)
        for statement in sql:
            con.execute(statement)
        con.commit()
        con.close()
        return ["audit", "verify", "--db", str(path)]
    return build


def _unchanged(name: str) -> Check:
    def check(tmp: Path, code: int, text: str) -> str | None:
        digest = (tmp / (name + ".sha256")).read_text()
        now = hashlib.sha256((tmp / name).read_bytes()).hexdigest()
        return None if now == digest else f"verify wrote to {name}"
    return check


def _foreign(name: str, make: Callable[[Path], None]) -> Callable[[Path], list[str]]:
    def build(tmp: Path) -> list[str]:
        path = tmp / name
        make(path)
        (tmp / (name + ".sha256")).write_text(hashlib.sha256(path.read_bytes()).hexdigest())
        return ["audit", "verify", "--db", str(path)]
    return build


def _users_db(path: Path) -> None:
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE users (name TEXT PRIMARY KEY, password_hash TEXT)")
    con.execute("INSERT INTO users VALUES ('alice', 'x')")
    con.commit()
    con.close()


def _audit_cases() -> list[Case]:
    return [
        Case(8, "audit_head and the last entry deleted",
             _tampered("DELETE FROM meta WHERE key='audit_head'", "DELETE FROM audit WHERE seq=3"),
             codes=(1,)),
        Case(8, "audit_head deleted", _tampered("DELETE FROM meta WHERE key='audit_head'"),
             codes=(1,)),
        Case(8, "the last entry deleted, the head moved back",
             _tampered("DELETE FROM audit WHERE seq=3",
                       "UPDATE meta SET value=(SELECT '2:' || hash FROM audit WHERE seq=2) "
                       "WHERE key='audit_head'"), codes=(1,)),
        Case(8, "an entry's time set to a blob",
             _tampered("UPDATE audit SET at=x'00ff' WHERE seq=2"), codes=(1,)),
        Case(8, "audit_head set to garbage",
             _tampered("UPDATE meta SET value='garbage' WHERE key='audit_head'"), codes=(1, 2)),
        Case(8, "an empty file", _foreign("empty.db", lambda p: p.write_bytes(b"")),
             check=_unchanged("empty.db")),
        Case(8, "a users database", _foreign("users.db", _users_db),
             check=_unchanged("users.db")),
        Case(8, "garbage bytes", _foreign("garbage.db", lambda p: p.write_bytes(b"\x8f" * 5000)),
             check=_unchanged("garbage.db")),
    ]


# -- class 5: damaged stores and journals ------------------------------------------------------

def _damaged_store(*sql: str, truncate: int | None = None) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        path = _store(tmp)
        con = sqlite3.connect(path)
        for statement in sql:
            con.execute(statement)
        con.commit()
        con.close()
        if truncate is not None:
            path.write_bytes(path.read_bytes()[:truncate])
        return path
    return make


def _garbage_at(rel: str) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        path = tmp / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(GARBAGE)
        return path
    return make


def _lists_the_rest(tmp: Path, code: int, text: str) -> str | None:
    if "o2/e1" not in text:
        return "the intact record is not listed"
    return None if "'o1/e1'" in text and "DAMAGED" in text else "the broken record is not flagged"


def _store_cases() -> list[Case]:
    broken_json = _damaged_store("UPDATE escalations SET data='{broken' WHERE id='o1/e1'")
    deadlines = _damaged_store("UPDATE meta SET value='[1,' WHERE key='deadlines'")
    truncated = _damaged_store(truncate=3000)
    zero_header = _damaged_store(truncate=0)
    cell = str(MINIMAL)
    out = [
        Case(5, "escalations list: one record's JSON broken",
             lambda t: ["escalations", "list", "--all", "--db", str(broken_json(t))],
             codes=(0,), check=_lists_the_rest),
        Case(5, "escalations show: the broken record",
             lambda t: ["escalations", "show", "o1/e1", "--db", str(broken_json(t))],
             check=_names("esc.db")),
        Case(5, "escalations list: the deadlines garbage",
             lambda t: ["escalations", "list", "--db", str(deadlines(t))], check=_names("esc.db")),
        Case(5, "escalations ack: the deadlines garbage",
             lambda t: ["escalations", "ack", "o2/e1", "--user", "bob", "--db",
                        str(deadlines(t))], check=_names("esc.db")),
        Case(5, "escalations list: a truncated store",
             lambda t: ["escalations", "list", "--db", str(truncated(t))], check=_names("esc.db")),
        Case(5, "escalations list: garbage",
             lambda t: ["escalations", "list", "--db", str(_garbage_at("esc.db")(t))],
             check=_names("esc.db")),
        Case(5, "console --db garbage",
             lambda t: ["console", cell, "--port", "1", "--users", str(t / "users.db"),
                        "--db", str(_garbage_at("esc.db")(t))], check=_names("esc.db")),
        Case(5, "console --db an empty file",
             lambda t: ["console", cell, "--port", "1", "--users", str(t / "users.db"),
                        "--db", str(zero_header(t))], check=_names("esc.db")),
        Case(5, "host: its journal garbage",
             lambda t: ["host", cell, "--name", "main", "--state-dir",
                        str(_garbage_at("state/journal-main.sqlite")(t).parent)],
             check=_names("journal-main.sqlite")),
        Case(5, "host: its replay store garbage",
             lambda t: ["host", cell, "--name", "main", "--state-dir",
                        str(_garbage_at("state/replay-main.sqlite")(t).parent)],
             check=_names("replay-main.sqlite")),
        Case(5, "plant: sim.sqlite garbage",
             lambda t: ["plant", cell, "--state-dir",
                        str(_garbage_at("state/sim.sqlite")(t).parent)],
             check=_names("sim.sqlite")),
        Case(5, "up: --state-dir a file",
             lambda t: ["up", cell, "--quiet", "--state-dir", str(_garbage_at("state")(t))],
             check=_names("state")),
        Case(5, "up: a directory where a journal goes",
             lambda t: ["up", cell, "--quiet", "--state-dir",
                        str(_garbage_at("state/journal-main.sqlite/x")(t).parent.parent)],
             check=_names("journal-main.sqlite")),
    ]
    return out


# -- class 9: the run report ---------------------------------------------------------------------

def _always_scrap(tmp: Path) -> list[str]:
    path = tmp / "scrap.yaml"
    path.write_text(MINIMAL.read_text().replace(
        "capabilities: {sawing: 12.0}", "capabilities: {sawing: 12.0}\n    scrap_rate: 1.0"))
    return ["run", str(path), "--quiet", "--report", str(tmp / "report.json")]


def _waiting_not_lost(tmp: Path, code: int, text: str) -> str | None:
    r = json.loads((tmp / "report.json").read_text())
    if (r["orders_lost"], r["orders_escalated"]) != (0, 1):
        return (f"orders_lost {r['orders_lost']}, orders_escalated {r['orders_escalated']} "
                f"for one order waiting on {r['escalations_by_outcome']}")
    return None


def _report_cases() -> list[Case]:
    return [Case(9, "scrap_rate 1.0: the order waits on an open escalation", _always_scrap,
                 codes=(0,), check=_waiting_not_lost)]


# -- class 11: terminal safety ----------------------------------------------------------------------

EVIL = "e\x1b[31mred\x07\x00\nforged line\x1b]0;title\x07"
EVIL_ARG = EVIL.replace("\x00", "")   # no command line can carry a NUL


def _clean(tmp: Path, code: int, text: str) -> str | None:
    raw = [c for c in text if (ord(c) < 32 and c != "\n") or ord(c) == 127]
    if raw:
        return f"raw control characters {sorted(set(map(ord, raw)))} in the output"
    if any(line.startswith("forged line") for line in text.split("\n")):
        return "an id's newline started a line of its own"
    longest = max(map(len, text.split("\n")), default=0)
    return f"a {longest}-character line" if longest > 2000 else None


def _evil_cell(tmp: Path, edit: Callable[[dict[str, object]], None]) -> Path:
    import yaml

    data = yaml.safe_load(DEMO.read_text())
    edit(data)
    path = tmp / "evil.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _terminal_cases() -> list[Case]:
    def product(value: str) -> Callable[[Path], list[str]]:
        def build(tmp: Path) -> list[str]:
            def edit(d: dict[str, object]) -> None:
                d["orders"][0]["product"] = value  # type: ignore[index]
                d["products"][0]["id"] = value + "x"  # type: ignore[index]
            return ["validate", str(_evil_cell(tmp, edit))]
        return build

    def fault_agent(tmp: Path) -> list[str]:
        path = tmp / "evil_faults.yaml"
        path.write_text(json.dumps({"name": "evil", "crashes": [{"agent": EVIL, "at_s": 1}]}))
        return ["validate", str(_evil_cell(tmp, lambda d: d["machines"][0].__setitem__(  # type: ignore[index]
            "id", "m" * 10_000))), "--faults", str(path)]

    return [
        Case(11, "ESC, BEL, NUL and a newline in an unknown product", product(EVIL),
             check=_clean),
        Case(11, "a 10 000-character unknown product", product("p" * 10_000), check=_clean),
        Case(11, "ESC in a fault file's agent, 10 000-character known ids", fault_agent,
             check=_clean),
        Case(11, "ESC and a newline in an unknown flag", lambda t: ["validate", str(DEMO),
                                                                   "--" + EVIL_ARG],
             check=_clean),
        Case(11, "ESC in an agent id for keys issue",
             lambda t: ["keys", "issue", EVIL_ARG, "--role", "machine", "--dir", str(_keys(t))],
             check=_clean),
    ]


CASES: list[Case] = [*_yaml_cases(), *_range_cases(), *_partition_cases(), *_output_cases(),
                     *_key_cases(), *_store_cases(), *_audit_cases(), *_report_cases(),
                     *_terminal_cases()]


def verdict(case: Case, tmp: Path, code: int | None, text: str) -> str:
    """``ok``, ``hang``, ``traceback`` or ``accepted`` (wrong answer without a traceback)."""
    if code is None:
        return "hang"
    if "Traceback" in text or code not in (0, 1, 2):
        return "traceback"
    if code not in case.codes:
        return "accepted"
    if case.check is not None and case.check(tmp, code, text) is not None:
        return "accepted"
    return "ok"


# -- the counting script ------------------------------------------------------------------------

def _count(timeout_s: float) -> None:
    import tempfile
    from collections import Counter

    totals: dict[int, Counter[str]] = {}
    for case in CASES:
        with tempfile.TemporaryDirectory() as name:
            tmp = Path(name)
            argv = case.build(tmp)
            try:
                proc = subprocess.run([sys.executable, "-m", "ops.cli", *argv], cwd=tmp,
                                      capture_output=True, text=True, timeout=timeout_s,
                                      errors="replace", stdin=subprocess.DEVNULL)
                code: int | None = proc.returncode
                text = proc.stdout + proc.stderr
            except subprocess.TimeoutExpired as exc:
                code, text = None, ""
                del exc
            result = verdict(case, tmp, code, text)
        totals.setdefault(case.cls, Counter())[result] += 1
        print(f"{case.cls:>2} {result:<9} {case.name}", flush=True)
    print("class  cases  ok  traceback  hang  accepted")
    for cls, counts in sorted(totals.items()):
        print(f"{cls:>5} {sum(counts.values()):>6} {counts['ok']:>3} {counts['traceback']:>10} "
              f"{counts['hang']:>5} {counts['accepted']:>9}")


if __name__ == "__main__":
    _count(float(sys.argv[1]) if len(sys.argv) > 1 else 20.0)
