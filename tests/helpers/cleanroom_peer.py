"""A clean-room autocell wire-protocol v1 peer, written from docs/PROTOCOL.md and
docs/SECURITY.md only.

It imports msgpack, PyNaCl, pyzmq and the standard library — no autocell
module — so that a test can show the documents are enough to interoperate.
Section numbers (``P§`` = PROTOCOL.md, ``S§`` = SECURITY.md) say which rule
each piece implements.

Used two ways:

* as a module (loaded by file path): :class:`Sealer`, :class:`Opener`,
  :func:`load_doc_tables`, and the key/certificate readers;
* as a program, the peer side of the ZeroMQ round trip::

      python cleanroom_peer.py --keys KEYS --agent ME --peer THEM --connect ENDPOINT

  It binds a PULL socket, prints ``{"endpoint": ...}``, waits for a line on
  stdin, sends THEM a ``cfp`` over PUSH, waits for one envelope back, opens it
  and prints ``{"received": ...}`` (or ``{"error": ...}``) as one JSON line.
"""

from __future__ import annotations

import argparse
import ast
import base64
import json
import math
import re
import secrets
import stat
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import nacl.exceptions
import nacl.signing
import zmq

# -- P§3, P§4, P§5, P§6: constants ------------------------------------------------------

SIGNING_TAG = b"autocell/1"
MAX_SENDER_BYTES = 64
MAX_PAYLOAD_BYTES = 65536
MAX_STR_BYTES = 16384
MAX_CONTAINER_LEN = 1024
MAX_DEPTH = 8
HEADER_KEYS = ("v", "id", "to", "type", "conv", "epoch", "seq", "ts", "body")
MAX_ADDRESSEES = 256                 # P§6.1
U64 = 2 ** 64

CERT_TAG = b"autocell-cert/1\x00"   # S§4.3
CRL_TAG = b"autocell-crl/1\x00"     # S§4.4
PKCS8_PREFIX = bytes.fromhex("302e020100300506032b657004220420")   # S§4.2
SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")


class Refused(Exception):
    """An envelope we drop; ``reason`` is one of the labels of P§12."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


# -- S§4: key files, certificates, revocation lists ------------------------------------

def _pem_der(path: Path, label: str) -> bytes:
    text = path.read_text()
    m = re.search(rf"-----BEGIN {label}-----(.*?)-----END {label}-----", text, re.S)
    if m is None:
        raise ValueError(f"{path}: no {label} PEM block")
    return base64.b64decode("".join(m.group(1).split()), validate=True)


def load_private_seed(path: Path) -> bytes:
    """The 32-byte Ed25519 seed from a PKCS#8 PEM file; refuses files others can read (S§5)."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise PermissionError(f"{path}: mode {mode:04o}; fix with: chmod 600 {path}")
    der = _pem_der(path, "PRIVATE KEY")
    if len(der) != 48 or not der.startswith(PKCS8_PREFIX):
        raise ValueError(f"{path}: not an Ed25519 PKCS#8 key")
    return der[16:]


def load_public_key(path: Path) -> bytes:
    der = _pem_der(path, "PUBLIC KEY")
    if len(der) != 44 or not der.startswith(SPKI_PREFIX):
        raise ValueError(f"{path}: not an Ed25519 SubjectPublicKeyInfo key")
    return der[12:]


def _verify(public_key: bytes, data: bytes, signature: bytes) -> bool:
    if len(signature) != 64:
        return False
    try:
        nacl.signing.VerifyKey(public_key).verify(data, signature)
    except nacl.exceptions.BadSignatureError:
        return False
    return True


def cert_tbs(cert: dict[str, Any]) -> bytes:
    """S§4.3: tag + msgpack [agent, role, public_key(bin), nb(float64), na(float64), serial]."""
    public_key = base64.b64decode(cert["public_key"], validate=True)
    return CERT_TAG + msgpack.packb(
        [cert["agent"], cert["role"], public_key, float(cert["not_before_at"]),
         float(cert["not_after_at"]), int(cert["serial"])], use_bin_type=True)


def crl_tbs(crl: dict[str, Any]) -> bytes:
    """S§4.4: tag + msgpack [serial, issued_at(float64), [[agent, serial], ...]]."""
    entries = [[e["agent"], int(e["serial"])] for e in crl["revoked"]]
    return CRL_TAG + msgpack.packb([int(crl["serial"]), float(crl["issued_at"]), entries],
                                   use_bin_type=True)


def check_certificate(cert: dict[str, Any], authority: bytes) -> bool:
    return (cert.get("format") == "autocell-cert/1"
            and _verify(authority, cert_tbs(cert), base64.b64decode(cert["signature"])))


def check_crl(crl: dict[str, Any], authority: bytes) -> bool:
    return (crl.get("format") == "autocell-crl/1"
            and _verify(authority, crl_tbs(crl), base64.b64decode(crl["signature"])))


@dataclass
class Peer:
    """What we know about one sender: from its certificate (P§11)."""

    agent: str
    role: str
    public_key: bytes
    not_before_at: float = -math.inf
    not_after_at: float = math.inf
    serial: int = 0
    revoked: bool = False


def peer_from_certificate(cert: dict[str, Any], authority: bytes,
                          crl: dict[str, Any] | None = None) -> Peer:
    if not check_certificate(cert, authority):
        raise ValueError(f"certificate of {cert.get('agent')!r} is not signed by the authority")
    revoked = False
    if crl is not None:
        if not check_crl(crl, authority):
            raise ValueError("revocation list is not signed by the authority")
        revoked = any(e["agent"] == cert["agent"] and int(e["serial"]) in (0, int(cert["serial"]))
                      for e in crl["revoked"])
    return Peer(cert["agent"], cert["role"], base64.b64decode(cert["public_key"]),
                float(cert["not_before_at"]), float(cert["not_after_at"]), int(cert["serial"]),
                revoked)


# -- P§7, P§8: schemas and access rules, read from the document itself -------------------

_TYPE_HEADING = re.compile(r"^#### `([a-z_]+)`")
_ROW = re.compile(r"^\|(.+)\|\s*$")


def _cells(line: str) -> list[str]:
    return [c.strip().strip("`") for c in line.strip().strip("|").split("|")]


def load_doc_tables(markdown: str) -> tuple[dict[str, list[tuple[str, str, bool, Any]]],
                                            dict[str, set[str]], dict[tuple[str, str], set[str]]]:
    """Body schemas (P§7) and access rules (P§8) as they are printed in PROTOCOL.md.

    schemas: type -> [(key, msgpack type, required, default)]; access: type -> roles;
    kinds: (type, kind) -> roles.
    """
    schemas: dict[str, list[tuple[str, str, bool, Any]]] = {}
    access: dict[str, set[str]] = {}
    kinds: dict[tuple[str, str], set[str]] = {}
    current: str | None = None
    table: str | None = None
    for line in markdown.splitlines():
        heading = _TYPE_HEADING.match(line)
        if heading:
            current, table = heading.group(1), "schema"
            schemas[current] = []
            continue
        if not _ROW.match(line):
            if line.startswith("#"):
                current, table = None, None
            continue
        cells = _cells(line)
        if cells[0] in ("key", "type") or set(cells[0]) <= {"-"}:
            if cells[:2] == ["type", "roles that may send it"]:
                table = "access"
            elif cells[:3] == ["type", "kind", "roles that may send it"]:
                table = "kinds"
            continue
        if table == "schema" and current is not None:
            key, typ, required, default = cells
            schemas[current].append(
                (key, typ, required == "yes", None if required == "yes" else ast.literal_eval(default)))
        elif table == "access":
            access[cells[0]] = {r.strip().strip("`") for r in cells[1].split(",") if r.strip() != "(nobody)"}
        elif table == "kinds":
            kinds[(cells[0], cells[1])] = {r.strip().strip("`") for r in cells[2].split(",")}
    return schemas, access, kinds


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


_TYPE_CHECKS = {
    "str": lambda v: isinstance(v, str),
    "int": _is_int,
    "float or int": lambda v: _is_int(v) or isinstance(v, float),
    "float": lambda v: isinstance(v, float),
    "bool": lambda v: isinstance(v, bool),
    "bin": lambda v: isinstance(v, bytes),
    "array": lambda v: isinstance(v, list),
    "map": lambda v: isinstance(v, dict),
}


# -- P§5: bounded decoding ----------------------------------------------------------------

def _no_ext(code: int, data: bytes) -> Any:
    raise Refused("malformed", f"ext type {code}")


def _pairs(pairs: list[tuple[Any, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if type(k) is not str:
            raise Refused("malformed", f"map key {k!r} is not a str")
        if k in out:
            raise Refused("malformed", f"duplicate map key {k!r}")
        out[k] = v
    return out


def unpack_bounded(payload: bytes) -> Any:
    try:
        doc = msgpack.unpackb(
            payload, raw=False, use_list=True, strict_map_key=True, object_pairs_hook=_pairs,
            ext_hook=_no_ext, max_str_len=MAX_STR_BYTES, max_bin_len=MAX_STR_BYTES,
            max_array_len=MAX_CONTAINER_LEN, max_map_len=MAX_CONTAINER_LEN, max_ext_len=0)
    except Refused:
        raise
    except Exception as exc:   # bad msgpack, bad UTF-8, limits, trailing bytes
        raise Refused("malformed", f"{type(exc).__name__}: {exc}") from None
    stack = [(doc, 1)]        # the header map is depth 1
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise Refused("malformed", f"nesting deeper than {MAX_DEPTH}")
        for v in (node.values() if isinstance(node, dict) else node):
            if isinstance(v, (dict, list)):
                stack.append((v, depth + 1))
            elif isinstance(v, float) and not math.isfinite(v):
                raise Refused("malformed", "NaN or infinity")
    return doc


# -- P§10: replay window -----------------------------------------------------------------

@dataclass
class ReplayWindow:
    """The receiver rules of P§10.2 (in memory: no restart handling)."""

    skew_s: float = 30.0
    window: int = 1024
    state: dict[str, tuple[int, int, set[int]]] = field(default_factory=dict)

    def check(self, sender: str, epoch: int, seq: int, ts: float, now: float) -> None:
        if abs(ts - now) > self.skew_s:
            raise Refused("clock_skew", f"ts {ts} vs clock {now}")
        st = self.state.get(sender)
        if st is None or epoch > st[0]:
            self.state[sender] = (epoch, seq, {seq})
            return
        e, hw, seen = st
        if epoch < e:
            raise Refused("replayed", "stale epoch")
        if seq > hw:
            seen.add(seq)
            self.state[sender] = (e, seq, {s for s in seen if seq - s < self.window})
            return
        if hw - seq >= self.window:
            raise Refused("replayed", "too old")
        if seq in seen:
            raise Refused("replayed", "duplicate")
        seen.add(seq)


# -- P§3–§6: sealing and opening ------------------------------------------------------------

class Sealer:
    """Seals envelopes for one agent: one epoch per start, one seq counter for all recipients."""

    def __init__(self, agent: str, seed: bytes, epoch: int | None = None) -> None:
        self.agent = agent
        self.agent_b = agent.encode("utf-8")
        if not 1 <= len(self.agent_b) <= MAX_SENDER_BYTES:
            raise ValueError("agent id must be 1..64 bytes")
        self.key = nacl.signing.SigningKey(seed)
        self.public_key = bytes(self.key.verify_key)
        self.epoch = int(time.time() * 1000) if epoch is None else epoch   # P§10.1
        self.seq = 0

    def seal(self, to: str | list[str], msg_type: str, body: dict[str, Any], ts: float,
             conv: str = "", msg_id: bytes | None = None) -> list[bytes]:
        """``to``: one agent id, or a list of 1..256 distinct ids (a multicast, P§6.1)."""
        if not isinstance(to, str) and not (
                1 <= len(to) <= MAX_ADDRESSEES and len(set(to)) == len(to)
                and all(isinstance(a, str) for a in to)):
            raise ValueError("to must be an agent id or 1..256 distinct agent ids")
        self.seq += 1
        header = {"v": 1, "id": secrets.token_bytes(16) if msg_id is None else msg_id,
                  "to": to, "type": msg_type, "conv": conv, "epoch": self.epoch,
                  "seq": self.seq, "ts": float(ts), "body": body}
        payload = msgpack.packb(header, use_bin_type=True)
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise ValueError("payload too large")
        signature = self.key.sign(SIGNING_TAG + self.agent_b + payload).signature
        return [self.agent_b, payload, signature]


@dataclass
class Opened:
    sender: str
    role: str
    header: dict[str, Any]
    body: dict[str, Any]


class Opener:
    """Checks an envelope in the order of P§9 and returns its header and body."""

    def __init__(self, peers: dict[str, Peer], *, local_agents: set[str] | None = None,
                 schemas: dict[str, list[tuple[str, str, bool, Any]]] | None = None,
                 access: dict[str, set[str]] | None = None,
                 kinds: dict[tuple[str, str], set[str]] | None = None,
                 replay: ReplayWindow | None = None) -> None:
        self.peers = peers
        self.local_agents = local_agents
        self.schemas = schemas
        self.access = access
        self.kinds = kinds or {}
        self.replay = replay

    def open(self, frames: list[bytes], now: float) -> Opened:
        # stage 1: authenticate, nothing parsed
        if len(frames) != 3:
            raise Refused("malformed", f"{len(frames)} frames")
        sender_b, payload, signature = (bytes(f) for f in frames)
        if not 1 <= len(sender_b) <= MAX_SENDER_BYTES:
            raise Refused("malformed", "sender frame size")
        try:
            sender = sender_b.decode("utf-8")
        except UnicodeDecodeError:
            raise Refused("malformed", "sender is not UTF-8") from None
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise Refused("malformed", "payload too large")
        peer = self.peers.get(sender)
        if peer is None:
            raise Refused("unknown_sender", sender)
        if peer.revoked:
            raise Refused("revoked", sender)
        if not peer.not_before_at <= now <= peer.not_after_at:
            raise Refused("certificate_expired", sender)
        if not _verify(peer.public_key, SIGNING_TAG + sender_b + payload, signature):
            raise Refused("bad_signature", sender)
        # stage 2: decode and check
        doc = unpack_bounded(payload)
        self._check_header(doc)
        msg_type, body = doc["type"], doc["body"]
        body = self._check_body(msg_type, body)
        self._check_access(peer.role, msg_type, body)
        if self.replay is not None:
            self.replay.check(sender, doc["epoch"], doc["seq"], float(doc["ts"]), now)
        addressees = [doc["to"]] if isinstance(doc["to"], str) else doc["to"]
        if self.local_agents is not None and not set(addressees) & self.local_agents:
            raise Refused("misdirected", ",".join(addressees))   # P§6.1: none is local
        header = {k: doc[k] for k in HEADER_KEYS if k != "body"}
        return Opened(sender, peer.role, header, body)

    @staticmethod
    def _check_header(doc: Any) -> None:
        if not isinstance(doc, dict) or set(doc) != set(HEADER_KEYS):
            raise Refused("malformed", "header keys")
        if not _is_int(doc["v"]) or doc["v"] != 1:
            raise Refused("malformed", "version")
        if not isinstance(doc["id"], bytes) or len(doc["id"]) != 16:
            raise Refused("malformed", "id must be 16 bytes of bin")
        for k in ("type", "conv"):
            if not isinstance(doc[k], str):
                raise Refused("malformed", f"{k} must be str")
        to = doc["to"]
        if isinstance(to, list):                                          # P§6.1
            if not 1 <= len(to) <= MAX_ADDRESSEES:
                raise Refused("malformed", "to must hold 1..256 agent ids")
            if not all(isinstance(a, str) for a in to) or len(set(to)) != len(to):
                raise Refused("malformed", "to must hold distinct str agent ids")
        elif not isinstance(to, str):
            raise Refused("malformed", "to must be str or an array of str")
        for k in ("epoch", "seq"):
            if not _is_int(doc[k]) or not 0 <= doc[k] < U64:
                raise Refused("malformed", f"{k} must be an int in 0..2^64-1")
        if not (_is_int(doc["ts"]) or isinstance(doc["ts"], float)):
            raise Refused("malformed", "ts must be a number")
        if not isinstance(doc["body"], dict):
            raise Refused("malformed", "body must be a map")

    def _check_body(self, msg_type: str, body: dict[str, Any]) -> dict[str, Any]:
        if self.schemas is None:
            return body
        schema = self.schemas.get(msg_type)
        if schema is None:
            raise Refused("malformed", f"unknown type {msg_type!r}")
        known = {k for k, _, _, _ in schema}
        if set(body) - known:
            raise Refused("malformed", f"unknown body keys {sorted(set(body) - known)}")
        full = {}
        for key, typ, required, default in schema:
            if key not in body:
                if required:
                    raise Refused("malformed", f"missing {key!r}")
                full[key] = default
            elif not _TYPE_CHECKS[typ](body[key]):
                raise Refused("malformed", f"{key!r} must be {typ}")
            else:
                full[key] = body[key]
        return full

    def _check_access(self, role: str, msg_type: str, body: dict[str, Any]) -> None:
        if self.access is None:
            return
        if role not in self.access.get(msg_type, set()):
            raise Refused("forbidden", f"{role} may not send {msg_type}")
        kind = body.get("kind")
        roles = self.kinds.get((msg_type, kind)) if isinstance(kind, str) else None
        if roles is not None and role not in roles:
            raise Refused("forbidden", f"{role} may not send {msg_type} for kind {kind}")


# -- the ZeroMQ peer program (P§2) ------------------------------------------------------------

def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def _say(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keys", required=True, help="keys directory (SECURITY.md §4.1)")
    ap.add_argument("--agent", required=True, help="our agent id (role order)")
    ap.add_argument("--peer", required=True, help="the agent to send a cfp to")
    ap.add_argument("--connect", required=True, help="the peer host's PULL endpoint")
    ap.add_argument("--protocol-doc", help="PROTOCOL.md, for body schemas and access rules")
    ap.add_argument("--timeout-s", type=float, default=15.0)
    args = ap.parse_args(argv)

    keys = Path(args.keys)
    authority = load_public_key(keys / "authority.pub")
    crl_path = keys / "revocations.json"
    crl = json.loads(crl_path.read_text()) if crl_path.exists() else None
    cert = json.loads((keys / "agents" / f"{args.peer}.cert").read_text())
    peers = {args.peer: peer_from_certificate(cert, authority, crl)}
    schemas = access = kinds = None
    if args.protocol_doc:
        schemas, access, kinds = load_doc_tables(Path(args.protocol_doc).read_text())
    opener = Opener(peers, local_agents={args.agent}, schemas=schemas, access=access, kinds=kinds,
                    replay=ReplayWindow())
    sealer = Sealer(args.agent, load_private_seed(keys / "agents" / f"{args.agent}.key"))

    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.linger = 0
    pull.bind("tcp://127.0.0.1:*")
    push = ctx.socket(zmq.PUSH)
    push.linger = 1000
    try:
        _say({"endpoint": pull.getsockopt(zmq.LAST_ENDPOINT).decode()})
        if not sys.stdin.readline():
            return 1
        push.connect(args.connect)
        now = time.time()
        task = f"{args.agent}/0"
        cfp = {"task": task, "order": args.agent, "kind": "operation", "capability": "milling",
               "op": "face-mill", "quantity": 2, "earliest_start_at": now, "due_at": now + 3600,
               "reply_by_at": now + 5}     # optional keys omitted on purpose (P§7)
        frames = sealer.seal(args.peer, "cfp", cfp, now, conv=f"{task}#0")
        push.send_multipart(frames)
        _say({"sent": {"seq": sealer.seq, "epoch": sealer.epoch, "conv": f"{task}#0"}})
        if not pull.poll(int(args.timeout_s * 1000)):
            _say({"error": "no reply"})
            return 1
        try:
            opened = opener.open(pull.recv_multipart(), time.time())
        except Refused as exc:
            _say({"error": str(exc), "reason": exc.reason})
            return 1
        _say({"received": {"sender": opened.sender, "role": opened.role,
                           "header": _jsonable(opened.header), "body": _jsonable(opened.body)}})
        return 0
    finally:
        pull.close()
        push.close()
        ctx.term()


if __name__ == "__main__":
    sys.exit(main())
