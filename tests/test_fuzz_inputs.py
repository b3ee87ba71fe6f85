"""Property-based fuzzing of every loader issue 20 hardened, and of the command line.

The property is the product's promise for bad input: whatever the bytes, the
loader returns a model or raises its typed error (``ConfigError`` for YAML
files, ``ConfigurationError`` for keys and certificates), and ``autocell``
returns an exit code (0, 1 or 2) or exits 2 from argparse — never another
exception, never a hang (each example has a Hypothesis ``deadline``).  Inputs
come three ways: raw bytes; the shipped files with a few bytes changed,
inserted or deleted (damage that keeps most of the structure, so it reaches
the later checks); and structured data of any shape put where the model
expects something else.  ``max_examples`` is small so the file stays fast
(well under a minute); CI runs it with the rest.
"""

from __future__ import annotations

import base64
import json
import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ops.cli import main
from ops.config import ConfigError, load_cell
from ops.config.fault_files import load_faults
from ops.experiment.sweep import load_sweep
from security.errors import ConfigurationError
from security.keystore import KeyDir, load_private_key

ROOT = Path(__file__).resolve().parents[1]
MINIMAL = ROOT / "cell_configs" / "minimal_cell.yaml"
DEMO = ROOT / "cell_configs" / "demo_cell.yaml"
PARTITION = ROOT / "cell_configs" / "faults" / "partition.yaml"
SWEEP = ROOT / "cell_configs" / "experiments" / "slack_vs_default.yaml"

FUZZ = settings(max_examples=40, deadline=3000, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@contextmanager
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="fuzz-") as name:
        yield Path(name)


# -- inputs --------------------------------------------------------------------------------------

def damaged(original: bytes) -> st.SearchStrategy[bytes]:
    """``original`` with up to 4 edits: a byte replaced, inserted or deleted."""
    edit = st.tuples(st.sampled_from(["replace", "insert", "delete"]),
                     st.integers(0, len(original)), st.binary(min_size=1, max_size=3))

    def apply(edits: list[tuple[str, int, bytes]]) -> bytes:
        data = bytearray(original)
        for kind, at, chunk in edits:
            at = min(at, len(data))
            if kind == "replace":
                data[at:at + len(chunk)] = chunk
            elif kind == "insert":
                data[at:at] = chunk
            else:
                del data[at:at + len(chunk)]
        return bytes(data)
    return st.lists(edit, min_size=1, max_size=4).map(apply)


SCALARS = (st.none() | st.booleans() | st.integers() | st.floats()
           | st.text(max_size=20) | st.sampled_from(["mill1", "o-001", "agv1", "", "\x1b[2J"]))
ANY = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                   | st.dictionaries(st.text(max_size=8) | st.integers(), inner, max_size=4),
                   max_leaves=20)


def yaml_bytes(data: Any) -> bytes:
    return yaml.safe_dump(data, allow_unicode=True).encode()


def with_part(path: Path, key: str, value: Any) -> bytes:
    data = yaml.safe_load(path.read_text())
    data[key] = value
    return yaml_bytes(data)


def any_file_bytes(path: Path, keys: list[str]) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=300),
        damaged(path.read_bytes()),
        st.builds(lambda k, v: with_part(path, k, v), st.sampled_from(keys), ANY),
    )


# -- the YAML loaders ------------------------------------------------------------------------

CELL_KEYS = ["cell", "layout", "machines", "robots", "products", "orders", "hosts", "sim",
             "negotiation", "security", "escalation", "network"]


@FUZZ
@given(any_file_bytes(DEMO, CELL_KEYS))
def test_the_cell_loader_returns_a_cell_or_a_config_error(content: bytes) -> None:
    with scratch() as tmp:
        path = tmp / "cell.yaml"
        path.write_bytes(content)
        try:
            load_cell(path)
        except ConfigError as exc:
            assert exc.issues and all("\x1b" not in str(i) for i in exc.issues)


@FUZZ
@given(any_file_bytes(PARTITION, ["partitions", "crashes", "breakdowns", "clock_skew", "hosts",
                                  "network", "name"]))
def test_the_fault_loader_returns_a_scenario_or_a_config_error(content: bytes) -> None:
    cfg = load_cell(DEMO)
    with scratch() as tmp:
        path = tmp / "faults.yaml"
        path.write_bytes(content)
        try:
            load_faults(path, cfg)
        except ConfigError as exc:
            assert exc.issues


@FUZZ
@given(any_file_bytes(SWEEP, ["cells", "grid", "strategies", "faults", "seeds", "kpis",
                              "name"]))
def test_the_sweep_loader_returns_a_sweep_or_a_config_error(content: bytes) -> None:
    with scratch() as tmp:
        # the sweep names ../demo_cell.yaml and ../faults/...: give it the same neighbours
        (tmp / "faults").mkdir()
        (tmp / "demo_cell.yaml").write_bytes(DEMO.read_bytes())
        (tmp / "faults" / "breakdowns.yaml").write_bytes(
            (ROOT / "cell_configs" / "faults" / "breakdowns.yaml").read_bytes())
        (tmp / "experiments").mkdir()
        path = tmp / "experiments" / "sweep.yaml"
        path.write_bytes(content)
        try:
            load_sweep(path)
        except ConfigError as exc:
            assert exc.issues


# -- keys and certificates -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> KeyDir:
    kd = KeyDir(tmp_path_factory.mktemp("keys") / "keys")
    kd.init(1.0e9)
    kd.issue("m1", "machine", 1.0e9)
    return kd


CERT_FIELDS = ["format", "agent", "role", "public_key", "not_before_at", "not_after_at",
               "serial", "signature"]
NUMBERS = (st.integers() | st.floats() | st.sampled_from([10**30, 2**63, -1, math.inf, 1e300]))


@FUZZ
@given(data=st.data())
def test_a_certificate_loads_or_gives_a_configuration_error(keys: KeyDir,
                                                            data: st.DataObject) -> None:
    original = keys.cert_path("m1").read_bytes()
    cert = json.loads(original)
    how = data.draw(st.sampled_from(["field", "bytes", "damage"]))
    if how == "field":
        cert[data.draw(st.sampled_from(CERT_FIELDS))] = data.draw(ANY | NUMBERS)
        content = json.dumps(cert).encode()
    elif how == "bytes":
        content = data.draw(st.binary(max_size=300))
    else:
        content = data.draw(damaged(original))
    with scratch() as tmp:
        path = tmp / "m1.cert"
        path.write_bytes(content)
        try:
            c = keys.certificate_at(path)
        except ConfigurationError as exc:
            assert str(path) in str(exc)
        else:
            c.tbs()  # what a loaded certificate must always allow: signing bytes


@FUZZ
@given(data=st.data())
def test_a_revocation_list_loads_or_gives_a_configuration_error(keys: KeyDir,
                                                                data: st.DataObject) -> None:
    crl = json.loads(keys.crl_path.read_bytes())
    key = data.draw(st.sampled_from(["serial", "issued_at", "revoked", "signature", "format"]))
    crl[key] = data.draw(ANY | NUMBERS | st.lists(st.dictionaries(
        st.sampled_from(["agent", "serial"]), ANY | NUMBERS), max_size=3))
    with scratch() as tmp:
        (tmp / "revocations.json").write_text(json.dumps(crl))
        try:
            KeyDir(tmp).revocations().tbs()
        except ConfigurationError as exc:
            assert "revocations.json" in str(exc)


@FUZZ
@given(st.one_of(st.binary(max_size=400),
                 st.builds(lambda b: b"-----BEGIN PRIVATE KEY-----\n" + base64.encodebytes(b)
                           + b"-----END PRIVATE KEY-----\n", st.binary(max_size=80))))
def test_a_private_key_file_loads_or_gives_a_configuration_error(content: bytes) -> None:
    with scratch() as tmp:
        path = tmp / "a.key"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, content)
        os.close(fd)
        try:
            load_private_key(path)
        except ConfigurationError as exc:
            assert str(path) in str(exc)


# -- the command line -------------------------------------------------------------------------------

FLAG_VALUE = (st.text(max_size=12) | st.sampled_from(
    ["nan", "inf", "-inf", "1e308", "-1", "0", "-3", "1e400", "", "\x1b[31m", "a\nb",
     "missing/x.json", ".", "/dev/null"]))


def run_cli(argv: list[str]) -> tuple[int, str]:
    out, err = StringIO(), StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 2
    return code, out.getvalue() + err.getvalue()


def cli_argv(tmp: Path) -> st.SearchStrategy[list[str]]:
    cell = str(tmp / "cell.yaml")
    commands = [
        (["validate", cell], ["--faults"]),
        (["run", cell, "--quiet"], ["--seed", "--until", "--report", "--events", "--faults",
                                    "--escalations-db", "--speed"]),
        (["chaos", cell, "--quiet", "--orders", "1"], ["--seed", "--seeds", "--write",
                                                       "--report"]),
        (["schema"], ["--out"]),
        (["keys", "show", "m1"], ["--dir"]),
        (["keys", "list"], ["--dir"]),
        (["keys", "issue", "m9", "--role", "machine", "--dir", str(tmp / "keys")],
         ["--valid-days"]),
        (["audit", "verify"], ["--db"]),
        (["escalations", "list"], ["--db"]),
        (["ops", "prometheus-config", cell], ["--out", "--scrape-interval"]),
    ]

    @st.composite
    def argv(draw: st.DrawFn) -> list[str]:
        head, flags = draw(st.sampled_from(commands))
        out = list(head)
        for flag in draw(st.lists(st.sampled_from(flags), max_size=3, unique=True)):
            out += [flag, draw(FLAG_VALUE)]
        if draw(st.booleans()):
            out.append(draw(FLAG_VALUE))      # a stray positional or flag
        return out
    return argv()


@settings(max_examples=60, deadline=8000, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_the_command_line_answers_with_an_exit_code(data: st.DataObject) -> None:
    with scratch() as tmp:
        (tmp / "cell.yaml").write_bytes(MINIMAL.read_bytes())
        KeyDir(tmp / "keys").init(1.0e9)
        argv = data.draw(cli_argv(tmp))
        cwd = os.getcwd()
        os.chdir(tmp)     # relative output paths land in the scratch directory
        try:
            code, text = run_cli(argv)
        finally:
            os.chdir(cwd)
        assert code in (0, 1, 2), (argv, code, text[-500:])
        assert "Traceback" not in text


# -- the escalation store under audit verify ------------------------------------------------------

@pytest.fixture(scope="module")
def store_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    from helpers.hostile import _store

    path = _store(tmp_path_factory.mktemp("store"))
    return path.read_bytes()


@FUZZ
@given(data=st.data())
def test_audit_verify_reports_or_refuses_and_never_writes(store_bytes: bytes,
                                                          data: st.DataObject) -> None:
    from agents.escalation.store import NotAnEscalationStore, verify_file

    content = data.draw(st.one_of(st.binary(max_size=600), damaged(store_bytes)))
    with scratch() as tmp:
        path = tmp / "esc.db"
        path.write_bytes(content)
        try:
            verify_file(path)
        except NotAnEscalationStore as exc:
            assert str(path) in str(exc)
        assert path.read_bytes() == content


# -- opening and reading the state stores ----------------------------------------------------------

def _open_escalation_store(path: Path) -> None:
    from agents.escalation.store import EscalationStore

    store = EscalationStore(path)
    try:
        store.list()
        for rec_id in list(store.damaged):
            assert rec_id
    finally:
        store.close()


def _open_journal(path: Path) -> None:
    from agents.runtime.journal import SqliteJournal

    journal = SqliteJournal(path)
    try:
        for agent in journal.agents():
            list(journal.records(agent))
        journal.next_boot("host/x")
    finally:
        journal.close()


def _open_fence(path: Path) -> None:
    from sim_bridge.fence_store import SqliteFenceStore

    fence = SqliteFenceStore(path)
    try:
        fence.load()
    finally:
        fence.close()


def _open_replay(path: Path) -> None:
    from security.replay_store import SqliteReplayStore

    replay = SqliteReplayStore(path)
    try:
        replay.load()
    finally:
        replay.close()


OPENERS = {"escalation store": _open_escalation_store, "journal": _open_journal,
           "fence store": _open_fence, "replay store": _open_replay}


@FUZZ
@given(data=st.data())
def test_a_damaged_store_opens_or_names_itself(store_bytes: bytes, data: st.DataObject) -> None:
    """Issue 20, class 5: any bytes as any state store — it opens, or one DamagedState (a
    ConfigurationError: exit 2) names the file; never sqlite3.DatabaseError or a JSON error."""
    from security.errors import ConfigurationError

    which = data.draw(st.sampled_from(sorted(OPENERS)))
    content = data.draw(st.one_of(st.binary(max_size=600), damaged(store_bytes)))
    with scratch() as tmp:
        path = tmp / "state.sqlite"
        path.write_bytes(content)
        try:
            OPENERS[which](path)
        except ConfigurationError as exc:
            assert str(path) in str(exc), (which, str(exc))
