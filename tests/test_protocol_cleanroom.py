"""docs/PROTOCOL.md is enough to interoperate: a clean-room peer against autocell.

``tests/helpers/cleanroom_peer.py`` was written from docs/PROTOCOL.md and
docs/SECURITY.md alone and imports no autocell module (checked below).  These
tests put it face to face with the product:

* its envelopes are accepted by :class:`agents.protocol.envelope.Opener`, and the
  product's :class:`~agents.protocol.envelope.Sealer` envelopes are opened by it;
* both sides refuse the same malformed envelopes with the same reason label;
* the worked examples printed in the documents verify, decode and re-seal
  byte for byte;
* over real ZeroMQ tcp, the peer (a subprocess) sends a ``cfp`` to an
  autocell :class:`~agents.runtime.bus.Bus` and gets a ``propose`` back.

The tables of PROTOCOL.md §7 and §8 are generated from the code; when they
drift, ``python tests/test_protocol_cleanroom.py --regenerate`` rewrites them.
"""

from __future__ import annotations

import ast
import asyncio
import importlib.util
import json
import os
import re
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import msgpack
import pytest
from helpers.waiting import EVENT_BOUND_S, PROCESS_BOUND_S

ROOT = Path(__file__).resolve().parents[1]
PROTOCOL = ROOT / "docs" / "PROTOCOL.md"
SECURITY = ROOT / "docs" / "SECURITY.md"
PEER_PATH = ROOT / "tests" / "helpers" / "cleanroom_peer.py"
EXAMPLE_SEED = b"autocell/PROTOCOL.md example"
AUTOCELL_PACKAGES = {"agents", "security", "ops", "sim_bridge"}


# -- generated parts of PROTOCOL.md --------------------------------------------------------

def render_field_tables() -> str:
    from agents.protocol.messages import field_table

    return field_table().strip()


def render_access_table() -> str:
    from agents.protocol.messages import REGISTRY
    from security.access import ACCESS, KIND_ACCESS
    from security.certs import ROLES

    def roles(allowed: frozenset[str]) -> str:
        return ", ".join(f"`{r}`" for r in ROLES if r in allowed) or "(nobody)"

    lines = ["| type | roles that may send it |", "|---|---|"]
    for msg_type in REGISTRY:
        lines.append(f"| `{msg_type}` | {roles(ACCESS.get(msg_type, frozenset()))} |")
    lines += ["", "Refinements by the body's `kind`: for these (type, kind) pairs the sender's",
              "role must be in the row above **and** in the row below.", "",
              "| type | kind | roles that may send it |", "|---|---|---|"]
    for (msg_type, kind), allowed in KIND_ACCESS.items():
        lines.append(f"| `{msg_type}` | `{kind}` | {roles(allowed)} |")
    return "\n".join(lines)


GENERATED = {"field tables": render_field_tables, "access table": render_access_table}


def _block(name: str) -> re.Pattern[str]:
    return re.compile(rf"(<!-- BEGIN GENERATED {name}[^>]*-->\n)(.*?)(\n<!-- END GENERATED {name} -->)",
                      re.S)


def regenerate(text: str) -> str:
    for name, render in GENERATED.items():
        text, n = _block(name).subn(lambda m: m.group(1) + render() + m.group(3), text)
        assert n == 1, f"PROTOCOL.md must contain exactly one generated block {name!r}"
    return text


# -- helpers -------------------------------------------------------------------------------

def load_peer() -> ModuleType:
    spec = importlib.util.spec_from_file_location("cleanroom_peer", PEER_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["cleanroom_peer"] = module
    spec.loader.exec_module(module)
    return module


cr = load_peer()


def doc_block(path: Path, name: str) -> str:
    """The fenced block right after ``<!-- example:NAME -->``."""
    m = re.search(rf"<!-- example:{name} -->\s*```[a-z]*\n(.*?)```", path.read_text(), re.S)
    assert m, f"{path.name} has no example block {name!r}"
    return m.group(1)


def doc_hex(path: Path, name: str) -> bytes:
    return bytes.fromhex("".join(doc_block(path, name).split()))


@pytest.fixture(scope="module")
def tables() -> tuple[Any, Any, Any]:
    return cr.load_doc_tables(PROTOCOL.read_text())


CELL_SEED = b"cleanroom tests"


@pytest.fixture
def cr_cell():  # noqa: ANN201
    """Three agents whose authority key is derivable from ``CELL_SEED`` (for revocations)."""
    from security.keystore import ephemeral_cell

    return ephemeral_cell({"order-7": "order", "mill-1": "machine", "agv-1": "robot"},
                          seed=CELL_SEED)


def cleanroom_opener(cr_cell, tables, crl=None, **kw):  # noqa: ANN001, ANN201
    """A clean-room opener trusting ``cr_cell``'s certificates, read as SECURITY.md JSON."""
    from security.keystore import cert_to_json

    authority = cr_cell.trust.authority.public_key
    peers = {}
    for agent in cr_cell.trust.agents():
        cert = json.loads(json.dumps(cert_to_json(cr_cell.trust.peer(agent, 1.0).cert)))
        peers[agent] = cr.peer_from_certificate(cert, authority, crl)
    schemas, access, kinds = tables
    return cr.Opener(peers, schemas=schemas, access=access, kinds=kinds, **kw)


NOW = 1_767_225_600.0
CFP_REQUIRED = {"task": "order-7/0", "order": "order-7", "kind": "operation",
                "capability": "milling", "op": "face-mill", "quantity": 5,
                "earliest_start_at": NOW, "due_at": NOW + 3600, "reply_by_at": NOW + 2}


# -- the clean room is clean ------------------------------------------------------------------

def test_cleanroom_peer_imports_only_msgpack_nacl_zmq_and_the_standard_library() -> None:
    allowed = {"msgpack", "nacl", "zmq", "__future__"} | set(sys.stdlib_module_names)
    imported = set()
    for node in ast.walk(ast.parse(PEER_PATH.read_text())):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative import in the clean-room peer"
            imported.add((node.module or "").split(".")[0])
    assert imported <= allowed, f"clean-room peer imports {sorted(imported - allowed)}"
    assert "importlib" not in imported and "__import__" not in PEER_PATH.read_text()


# -- the generated tables are current ---------------------------------------------------------

@pytest.mark.parametrize("name", sorted(GENERATED))
def test_generated_protocol_tables_match_the_code(name: str) -> None:
    m = _block(name).search(PROTOCOL.read_text())
    assert m, f"PROTOCOL.md lost its generated {name} block"
    assert m.group(2) == GENERATED[name](), (
        f"PROTOCOL.md's {name} are out of date with the code; run "
        "`python tests/test_protocol_cleanroom.py --regenerate` and review the diff")


def test_doc_tables_read_by_the_cleanroom_peer_equal_the_code(tables) -> None:  # noqa: ANN001
    from agents.protocol.messages import _MISSING, REGISTRY
    from security.access import ACCESS, KIND_ACCESS

    schemas, access, kinds = tables
    assert set(schemas) == set(REGISTRY)
    for msg_type, cls in REGISTRY.items():
        assert [(k, req) for k, _, req, _ in schemas[msg_type]] == [
            (name, default is _MISSING) for name, _, default in cls._spec]
        for (key, _, req, default), (_, _, code_default) in zip(schemas[msg_type], cls._spec):
            if not req:
                assert default == code_default and type(default) is type(code_default), key
    assert access == {t: set(r) for t, r in ACCESS.items()}
    assert kinds == {k: set(r) for k, r in KIND_ACCESS.items()}


# -- clean room -> autocell --------------------------------------------------------------------

def test_cleanroom_envelope_is_accepted_by_autocell_with_defaults_filled(cr_cell) -> None:  # noqa: ANN001
    from agents.protocol.envelope import Opener
    from agents.protocol.messages import CallForProposals
    from security.replay import ReplayGuard

    sealer = cr.Sealer("order-7", cr_cell.keys["order-7"].seed, epoch=7)
    frames = sealer.seal("mill-1", "cfp", dict(CFP_REQUIRED), NOW, conv="order-7/0#0",
                         msg_id=b"\x01" * 16)
    msg = Opener(cr_cell.trust, ReplayGuard()).open(frames, NOW + 1)
    assert (msg.sender, msg.to, msg.conv, msg.id, msg.epoch, msg.seq, msg.ts) == (
        "order-7", "mill-1", "order-7/0#0", b"\x01" * 16, 7, 1, NOW)
    assert msg.body == CallForProposals(**CFP_REQUIRED)     # optional keys took their defaults


def test_cleanroom_sequence_numbers_are_shared_across_recipients(cr_cell) -> None:  # noqa: ANN001
    from agents.protocol.envelope import Opener
    from security.errors import Replayed
    from security.replay import ReplayGuard

    opener = Opener(cr_cell.trust, ReplayGuard())      # one host running both mill-1 and agv-1
    sealer = cr.Sealer("order-7", cr_cell.keys["order-7"].seed)
    a = sealer.seal("mill-1", "cfp", dict(CFP_REQUIRED), NOW)
    b = sealer.seal("agv-1", "cfp", {**CFP_REQUIRED, "kind": "transport"}, NOW)
    assert [opener.open(f, NOW).seq for f in (b, a)] == [2, 1]     # reordered: still fine
    with pytest.raises(Replayed):
        opener.open(a, NOW)


def test_cleanroom_nested_body_is_accepted_by_autocell(cr_cell) -> None:  # noqa: ANN001
    from agents.protocol.envelope import Opener

    sealer = cr.Sealer("mill-1", cr_cell.keys["mill-1"].seed)
    body = {"escalation": "e-1", "priority": 1, "cause": "repeated faults", "consequence": "late",
            "options": [{"id": "wait", "label": "wait for repair", "effect": "+2 h"}],
            "context": {"a": [[[[[1, 2.5, None, True, b"\x00", "x"]]]]]}}   # depth 8 exactly
    msg = Opener(cr_cell.trust, None).open(sealer.seal("order-7", "escalate", body, NOW), NOW)
    assert msg.body.context == body["context"]


def test_cleanroom_multicast_is_accepted_by_autocell_for_each_local_addressee(cr_cell) -> None:  # noqa: ANN001
    from agents.protocol.envelope import Opener
    from security.errors import Replayed
    from security.replay import ReplayGuard

    sealer = cr.Sealer("order-7", cr_cell.keys["order-7"].seed, epoch=9)
    frames = sealer.seal(["mill-1", "agv-1"], "cfp", dict(CFP_REQUIRED), NOW, conv="k")
    host_a, host_b = Opener(cr_cell.trust, ReplayGuard()), Opener(cr_cell.trust, ReplayGuard())
    opened = host_a.open_envelope(frames, NOW)
    assert opened.to == ("mill-1", "agv-1")
    assert [(m.to, m.seq) for m in opened.for_local({"agv-1"})] == [("agv-1", 1)]
    assert [m.to for m in host_b.open_envelope(frames, NOW).for_local({"mill-1"})] == ["mill-1"]
    with pytest.raises(Replayed):                       # once per host
        host_a.open_envelope(frames, NOW)


def test_multicast_to_encoding_matches_the_protocol_example() -> None:
    assert doc_hex(PROTOCOL, "multicast_to") == msgpack.packb(
        {"to": ["mill-1", "agv-1"]}, use_bin_type=True)[1:]


# -- autocell -> clean room --------------------------------------------------------------------

def test_autocell_multicast_is_opened_by_the_cleanroom_peer(cr_cell, tables) -> None:  # noqa: ANN001
    from agents.protocol.envelope import Sealer
    from agents.protocol.messages import CallForProposals

    sealer = Sealer("order-7", cr_cell.keys["order-7"], epoch=5, random_bytes=os.urandom)
    frames = sealer.seal(["agv-1", "mill-1"], CallForProposals(**CFP_REQUIRED), NOW)
    for local in ({"mill-1"}, {"agv-1", "other"}):
        opened = cleanroom_opener(cr_cell, tables, local_agents=local,
                                  replay=cr.ReplayWindow()).open(frames, NOW)
        assert opened.header["to"] == ["agv-1", "mill-1"] and opened.header["seq"] == 1
    with pytest.raises(cr.Refused) as info:
        cleanroom_opener(cr_cell, tables, local_agents={"order-7"}).open(frames, NOW)
    assert info.value.reason == "misdirected"


def test_autocell_envelope_is_verified_and_decoded_by_the_cleanroom_peer(cr_cell, tables) -> None:  # noqa: ANN001
    from agents.protocol.envelope import Sealer
    from agents.protocol.messages import Proposal

    proposal = Proposal(task="order-7/0", kind="operation", start_at=NOW + 60, finish_at=NOW + 150,
                        hold_until_at=NOW + 5, cost={"queue_s": 60, "energy_kwh": 0.35})
    sealer = Sealer("mill-1", cr_cell.keys["mill-1"], epoch=1234, random_bytes=os.urandom)
    sealer.seal("agv-1", proposal, NOW)            # seq 1 went elsewhere
    frames = sealer.seal("order-7", proposal, NOW, conv="c-1")
    opened = cleanroom_opener(cr_cell, tables, local_agents={"order-7"},
                              replay=cr.ReplayWindow()).open(frames, NOW + 2)
    assert (opened.sender, opened.role) == ("mill-1", "machine")
    assert {k: v for k, v in opened.header.items() if k != "id"} == {
        "v": 1, "to": "order-7", "type": "propose", "conv": "c-1", "epoch": 1234, "seq": 2,
        "ts": NOW}
    assert len(opened.header["id"]) == 16
    assert opened.body == proposal.to_wire()


# -- both sides refuse the same things for the same reason --------------------------------------

def _hdr(**over: Any) -> dict[str, Any]:
    base = {"v": 1, "id": b"\x00" * 16, "to": "mill-1", "type": "cfp", "conv": "", "epoch": 1,
            "seq": 1, "ts": NOW, "body": dict(CFP_REQUIRED)}
    base.update(over)
    return base


def _nest(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return value


_ESC = {"escalation": "e", "priority": 1, "cause": "c", "consequence": "c"}
CASES: dict[str, tuple[str, Any, str]] = {
    # name: (sender, header map or raw payload bytes, reason)
    "unknown body key": ("order-7", _hdr(body={**CFP_REQUIRED, "colour": "red"}), "malformed"),
    "missing required key": ("order-7", _hdr(body={k: v for k, v in CFP_REQUIRED.items()
                                                   if k != "due_at"}), "malformed"),
    "float for an int field": ("order-7", _hdr(body={**CFP_REQUIRED, "quantity": 5.0}), "malformed"),
    "bool for an int field": ("order-7", _hdr(body={**CFP_REQUIRED, "quantity": True}), "malformed"),
    "bool for a number field": ("order-7", _hdr(body={**CFP_REQUIRED, "due_at": True}), "malformed"),
    "str id": ("order-7", _hdr(id="0123456789abcdef"), "malformed"),
    "15-byte id": ("order-7", _hdr(id=b"\x00" * 15), "malformed"),
    "version 2": ("order-7", _hdr(v=2), "malformed"),
    "float version": ("order-7", _hdr(v=1.0), "malformed"),
    "extra header key": ("order-7", {**_hdr(), "from": "order-7"}, "malformed"),
    "missing header key": ("order-7", {k: v for k, v in _hdr().items() if k != "conv"}, "malformed"),
    "bin for str": ("order-7", _hdr(to=b"mill-1"), "malformed"),
    "empty to list": ("order-7", _hdr(to=[]), "malformed"),
    "257 addressees": ("order-7", _hdr(to=[f"m{i}" for i in range(257)]), "malformed"),
    "repeated addressee": ("order-7", _hdr(to=["mill-1", "agv-1", "mill-1"]), "malformed"),
    "bin addressee": ("order-7", _hdr(to=["mill-1", b"agv-1"]), "malformed"),
    "int addressee": ("order-7", _hdr(to=["mill-1", 1]), "malformed"),
    "negative seq": ("order-7", _hdr(seq=-1), "malformed"),
    "str ts": ("order-7", _hdr(ts="now"), "malformed"),
    "unknown type": ("order-7", _hdr(type="gossip"), "malformed"),
    "string too long": ("order-7", _hdr(conv="x" * 16385), "malformed"),
    "array too long": ("order-7", _hdr(type="heartbeat", body={"leases": [0] * 1025}), "malformed"),
    "nested too deep": ("mill-1", _hdr(type="escalate", body={**_ESC, "context": {"a": _nest(6)}}),
                        "malformed"),
    "bin key in the header": ("order-7", {**_hdr(), b"x": 1}, "malformed"),
    "bin key in the body": ("order-7", _hdr(body={**CFP_REQUIRED, b"x": 1, "y": 2}), "malformed"),
    "int map key inside": ("mill-1", _hdr(type="escalate", body={**_ESC, "context": {1: "x"}}),
                           "malformed"),
    "ext type": ("order-7", _hdr(conv=msgpack.ExtType(5, b"x")), "malformed"),
    "timestamp ext": ("order-7", _hdr(ts=msgpack.Timestamp(1767225600)), "malformed"),
    "trailing bytes": ("order-7", msgpack.packb(_hdr(), use_bin_type=True) + b"\xc0", "malformed"),
    "not a map": ("order-7", msgpack.packb([1, 2, 3]), "malformed"),
    "invalid utf-8 str": ("order-7", msgpack.packb(_hdr(conv="@@"), use_bin_type=True).replace(
        b"\xa2@@", b"\xa2\xff\xfe"), "malformed"),
    "payload too large": ("order-7", _hdr(type="heartbeat", body={"leases": ["y" * 16000] * 5}),
                          "malformed"),
    "order proposes": ("order-7", _hdr(type="propose", body={
        "task": "t", "kind": "operation", "start_at": NOW, "finish_at": NOW, "hold_until_at": NOW}),
        "forbidden"),
    "robot proposes an operation": ("agv-1", _hdr(type="propose", to="order-7", body={
        "task": "t", "kind": "operation", "start_at": NOW, "finish_at": NOW, "hold_until_at": NOW}),
        "forbidden"),
    "machine sends a decision": ("mill-1", _hdr(type="decision", body={
        "escalation": "e", "option": "o", "user": "u"}), "forbidden"),
    "clock skew": ("order-7", _hdr(ts=NOW + 31), "clock_skew"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_autocell_and_the_cleanroom_peer_refuse_alike(case: str, cr_cell, tables) -> None:  # noqa: ANN001
    from agents.protocol.envelope import Opener
    from security.errors import Rejected
    from security.replay import ReplayGuard

    sender, doc, reason = CASES[case]
    payload = doc if isinstance(doc, bytes) else msgpack.packb(doc, use_bin_type=True)
    sender_b = sender.encode()
    frames = [sender_b, payload, cr_cell.keys[sender].sign(cr.SIGNING_TAG + sender_b + payload)]
    with pytest.raises(Rejected) as theirs:
        Opener(cr_cell.trust, ReplayGuard()).open(frames, NOW)
    with pytest.raises(cr.Refused) as ours:
        cleanroom_opener(cr_cell, tables, replay=cr.ReplayWindow()).open(frames, NOW)
    assert (theirs.value.reason, ours.value.reason) == (reason, reason), (
        str(theirs.value), str(ours.value))


@pytest.mark.parametrize("case", ["flipped payload bit", "wrong key", "short signature",
                                  "unknown sender", "two frames", "empty sender", "revoked"])
def test_authentication_failures_agree(case: str, cr_cell, tables) -> None:  # noqa: ANN001
    from agents.protocol.envelope import Opener
    from security.certs import RevocationList
    from security.crypto import SigningKey
    from security.errors import Rejected
    from security.keystore import crl_to_json

    frames = cr.Sealer("order-7", cr_cell.keys["order-7"].seed).seal(
        "mill-1", "cfp", dict(CFP_REQUIRED), NOW)
    reason = "bad_signature"
    ours = cleanroom_opener(cr_cell, tables)
    if case == "flipped payload bit":
        frames[1] = frames[1][:-1] + bytes([frames[1][-1] ^ 1])
    elif case == "wrong key":
        frames[2] = cr_cell.keys["mill-1"].sign(cr.SIGNING_TAG + frames[0] + frames[1])
    elif case == "short signature":
        frames[2] = frames[2][:63]
    elif case == "unknown sender":
        frames[0], reason = b"order-8", "unknown_sender"
    elif case == "two frames":
        frames, reason = frames[:2], "malformed"
    elif case == "empty sender":
        frames[0], reason = b"", "malformed"
    elif case == "revoked":
        reason = "revoked"
        authority = SigningKey.from_deterministic_seed(CELL_SEED + b"/authority")
        crl = RevocationList(2, NOW, (("order-7", 0), ("mill-1", 99))).signed(authority)
        ours = cleanroom_opener(cr_cell, tables, crl=json.loads(json.dumps(crl_to_json(crl))))
        assert not ours.peers["mill-1"].revoked        # another serial: not this certificate
        cr_cell.trust.set_revocations(crl)
    with pytest.raises(Rejected) as theirs:
        Opener(cr_cell.trust, None).open(frames, NOW)
    with pytest.raises(cr.Refused) as mine:
        ours.open(frames, NOW)
    assert (theirs.value.reason, mine.value.reason) == (reason, reason)


# -- the worked examples in the documents ------------------------------------------------------

def _example_frames() -> list[bytes]:
    return [doc_hex(PROTOCOL, "frame0"), doc_hex(PROTOCOL, "frame1"), doc_hex(PROTOCOL, "frame2")]


def test_protocol_worked_example_verifies_and_decodes_in_the_clean_room(tables) -> None:  # noqa: ANN001
    frames = _example_frames()
    decoded = json.loads(doc_block(PROTOCOL, "decoded"))
    public_key = doc_hex(PROTOCOL, "public_key")
    ts = decoded["header"]["ts"]
    schemas, access, kinds = tables
    opener = cr.Opener({"mill-1": cr.Peer("mill-1", "machine", public_key)}, local_agents={"order-7"},
                       schemas=schemas, access=access, kinds=kinds, replay=cr.ReplayWindow())
    opened = opener.open(frames, ts + 29.0)
    assert opened.sender == decoded["sender"]
    assert {**opened.header, "id": opened.header["id"].hex()} == decoded["header"]
    assert opened.body == decoded["body"]
    assert type(opened.body["cost"]["queue_s"]) is int
    with pytest.raises(cr.Refused, match="replayed"):
        opener.open(frames, ts)


def test_protocol_worked_example_reseals_byte_for_byte_from_the_printed_seed() -> None:
    decoded = json.loads(doc_block(PROTOCOL, "decoded"))
    h = decoded["header"]
    sealer = cr.Sealer(decoded["sender"], doc_hex(PROTOCOL, "private_seed"), epoch=h["epoch"])
    assert sealer.public_key == doc_hex(PROTOCOL, "public_key")
    sealer.seq = h["seq"] - 1
    frames = sealer.seal(h["to"], h["type"], decoded["body"], h["ts"], conv=h["conv"],
                         msg_id=bytes.fromhex(h["id"]))
    assert frames == _example_frames()


def test_protocol_worked_example_is_accepted_by_autocell_and_matches_its_recipe() -> None:
    from agents.protocol.envelope import Opener, Sealer
    from agents.protocol.messages import Proposal
    from security.keystore import ephemeral_cell
    from security.replay import ReplayGuard

    cell = ephemeral_cell({"order-7": "order", "mill-1": "machine"}, seed=EXAMPLE_SEED)
    assert cell.keys["mill-1"].public_key == doc_hex(PROTOCOL, "public_key")
    frames = _example_frames()
    msg = Opener(cell.trust, ReplayGuard()).open(frames, 1767225601.25)
    assert isinstance(msg.body, Proposal) and msg.seq == 3
    # the recipe printed above the hex dump produces exactly the hex dump
    recipe = re.search(r"```python\n(from security\.keystore.*?)```", PROTOCOL.read_text(), re.S)
    assert recipe
    ns: dict[str, Any] = {}
    exec(recipe.group(1), ns)  # noqa: S102 - our own documentation
    assert ns["frames"] == frames
    assert isinstance(ns["sealer"], Sealer)


def test_security_worked_examples_verify_in_the_clean_room(tmp_path: Path) -> None:
    authority = doc_hex(SECURITY, "authority_public_key")
    cert = json.loads(doc_block(SECURITY, "certificate"))
    assert cr.cert_tbs(cert) == doc_hex(SECURITY, "certificate_tbs")
    assert cr.check_certificate(cert, authority)
    peer = cr.peer_from_certificate(cert, authority)
    assert peer.public_key == doc_hex(PROTOCOL, "public_key") and peer.role == "machine"
    crl = json.loads(doc_block(SECURITY, "crl"))
    assert cr.crl_tbs(crl) == doc_hex(SECURITY, "crl_tbs")
    assert cr.check_crl(crl, authority)
    assert not cr.check_certificate({**cert, "role": "order"}, authority)
    # the PEM files printed in SECURITY.md §4.5
    pems = re.findall(r"-----BEGIN (PUBLIC|PRIVATE) KEY-----\n.*?-----END \1 KEY-----\n",
                      SECURITY.read_text(), re.S)
    assert pems == ["PUBLIC", "PRIVATE"]
    blocks = [m.group(0) for m in re.finditer(
        r"-----BEGIN (PUBLIC|PRIVATE) KEY-----\n.*?-----END \1 KEY-----\n", SECURITY.read_text(), re.S)]
    (tmp_path / "authority.pub").write_text(blocks[0])
    key = tmp_path / "mill-1.key"
    key.write_text(blocks[1])
    key.chmod(0o600)
    assert cr.load_public_key(tmp_path / "authority.pub") == authority
    assert cr.load_private_seed(key) == doc_hex(PROTOCOL, "private_seed")


def test_security_worked_examples_match_autocell() -> None:
    from security.certs import RevocationList
    from security.crypto import SigningKey
    from security.keystore import cert_from_json, crl_from_json, ephemeral_cell

    cell = ephemeral_cell({"order-7": "order", "mill-1": "machine"}, seed=EXAMPLE_SEED)
    assert cell.trust.authority.public_key == doc_hex(SECURITY, "authority_public_key")
    cert = cert_from_json(json.loads(doc_block(SECURITY, "certificate")), SECURITY)
    assert cert == cell.trust.peer("mill-1", 1.0).cert
    crl = crl_from_json(json.loads(doc_block(SECURITY, "crl")), SECURITY)
    authority = SigningKey.from_deterministic_seed(EXAMPLE_SEED + b"/authority")
    assert crl == RevocationList(crl.serial, crl.issued_at, crl.revoked).signed(authority)


# -- key files written by autocell, read by the clean room -------------------------------------

def test_cleanroom_reads_a_keys_directory_made_by_autocell(tmp_path: Path) -> None:
    from security.keystore import KeyDir

    kd = KeyDir(tmp_path / "keys")
    kd.init(NOW)
    kd.issue("mill-1", "machine", NOW)
    kd.revoke("mill-1", NOW + 1)
    authority = cr.load_public_key(kd.authority_pub_path)
    assert authority == kd.authority().public_key
    seed = cr.load_private_seed(kd.key_path("mill-1"))
    assert seed == kd.identity("mill-1")[0].seed
    cert = json.loads(kd.cert_path("mill-1").read_text())
    crl = json.loads(kd.crl_path.read_text())
    assert cr.check_certificate(cert, authority) and cr.check_crl(crl, authority)
    assert cr.peer_from_certificate(cert, authority, crl).revoked
    kd.key_path("mill-1").chmod(0o640)
    with pytest.raises(PermissionError, match="chmod 600"):
        cr.load_private_seed(kd.key_path("mill-1"))


# -- over real ZeroMQ tcp ----------------------------------------------------------------------

async def _round_trip(keys: Path) -> tuple[dict[str, Any], Any, str]:
    from agents.protocol.envelope import Opener
    from agents.protocol.messages import Message, Proposal
    from agents.runtime.bus import Bus
    from agents.runtime.transport import ZmqTransport
    from security.keystore import KeyDir
    from security.replay import ReplayGuard

    kd = KeyDir(keys)
    bus = Bus(ZmqTransport("tcp://127.0.0.1:*"), Opener(kd.trust_store(), ReplayGuard()),
              clock=time.time, random_bytes=os.urandom)
    key, _ = kd.identity("mill-1")
    bus.add_identity("mill-1", key, epoch=int(time.time() * 1000))
    got: list[Message] = []

    def handler(msg: Message) -> None:
        got.append(msg)
        if msg.type == "cfp":
            cfp = msg.body
            bus.send("mill-1", msg.sender, Proposal(
                task=cfp.task, kind="operation", start_at=cfp.earliest_start_at,  # type: ignore[attr-defined]
                finish_at=cfp.earliest_start_at + 90.0, hold_until_at=cfp.reply_by_at,  # type: ignore[attr-defined]
                cost={"queue_s": 0.0, "processing_s": 90.0}), conv=msg.conv)

    endpoint = await bus.start(handler)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-X", "importtime", str(PEER_PATH), "--keys", str(keys),
        "--agent", "cr-order", "--peer", "mill-1", "--connect", endpoint,
        "--protocol-doc", str(PROTOCOL), "--timeout-s", f"{EVENT_BOUND_S:g}",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    try:
        # each line is an event of the peer's; the bounds only guard against a hang
        first = json.loads(await asyncio.wait_for(proc.stdout.readline(), PROCESS_BOUND_S))
        bus.set_route("cr-order", first["endpoint"])
        proc.stdin.write(b"go\n")
        await proc.stdin.drain()
        lines = []
        while True:
            line = await asyncio.wait_for(proc.stdout.readline(), PROCESS_BOUND_S)
            if not line:
                break
            lines.append(json.loads(line))
        stderr = (await proc.stderr.read()).decode()
        assert await asyncio.wait_for(proc.wait(), PROCESS_BOUND_S) == 0, (lines, stderr[-2000:])
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await bus.close()
    result = {k: v for line in lines for k, v in line.items()}
    return result, (got, dict(bus.stats.received), dict(bus.stats.rejected)), stderr


def test_cleanroom_peer_negotiates_with_an_autocell_bus_over_zeromq_tcp(tmp_path: Path) -> None:
    from security.keystore import KeyDir

    keys = tmp_path / "keys"
    kd = KeyDir(keys)
    kd.init(time.time())
    kd.issue("mill-1", "machine", time.time())
    kd.issue("cr-order", "order", time.time())

    result, (got, received, rejected), importtime = asyncio.run(_round_trip(keys))

    assert rejected == {} and received == {"cfp": 1}
    (cfp,) = got
    assert (cfp.sender, cfp.to, cfp.seq, cfp.body.attempt) == ("cr-order", "mill-1", 1, 0)  # type: ignore[attr-defined]
    assert "error" not in result, result
    reply = result["received"]
    assert (reply["sender"], reply["role"]) == ("mill-1", "machine")
    assert reply["header"]["type"] == "propose" and reply["header"]["to"] == "cr-order"
    assert reply["header"]["conv"] == result["sent"]["conv"] == cfp.conv
    assert reply["header"]["seq"] == 1
    assert reply["body"]["task"] == "cr-order/0" and reply["body"]["kind"] == "operation"
    # the peer process really ran without autocell: -X importtime lists every import
    modules = {line.rsplit("|", 1)[-1].strip() for line in importtime.splitlines()
               if line.startswith("import time:")}
    assert {m.split(".")[0] for m in modules} & AUTOCELL_PACKAGES == set()
    assert "msgpack" in modules and "zmq" in modules


if __name__ == "__main__":
    if sys.argv[1:] == ["--regenerate"]:
        sys.path.insert(0, str(ROOT))
        new = regenerate(PROTOCOL.read_text())
        PROTOCOL.write_text(new)
        print(f"regenerated the tables in {PROTOCOL}")
    else:
        print("usage: python tests/test_protocol_cleanroom.py --regenerate", file=sys.stderr)
        sys.exit(2)
