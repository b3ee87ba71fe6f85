"""``autocell keys``: the cell authority, agent certificates and revocation, on disk.

Driven through ``ops.cli.main([...])`` (exit codes, stdout/stderr), once through
the installed ``autocell`` console script, and checked by what a host would
do with the result: ``KeyDir.trust_store()`` + ``Opener``.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agents.protocol.envelope import Opener, Sealer
from agents.protocol.messages import Heartbeat
from ops.cli import main
from security.certs import ROLES
from security.crypto import fingerprint
from security.errors import (
    CertificateExpired,
    ConfigurationError,
    InsecureKeyFile,
    Revoked,
)
from security.keystore import KeyDir, load_private_key
from security.replay import ReplayGuard


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """A keys directory with an authority, a machine ``m1`` and an order ``o1``."""
    d = tmp_path / "keys"
    assert run(capsys, "keys", "init", "--dir", str(d))[0] == 0
    assert run(capsys, "keys", "issue", "m1", "--role", "machine", "--dir", str(d))[0] == 0
    assert run(capsys, "keys", "issue", "o1", "--role", "order", "--dir", str(d))[0] == 0
    return d


def envelope(kd: KeyDir, agent: str, now: float) -> list[bytes]:
    key, _ = kd.identity(agent)
    return Sealer(agent, key, epoch=1, random_bytes=os.urandom).seal("o1", Heartbeat(), now)


# -- init ---------------------------------------------------------------------------------

def test_init_creates_authority_0600_and_refuses_a_second_init(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "keys"
    code, out, err = run(capsys, "keys", "init", "--dir", str(d))
    assert code == 0 and err == ""
    assert str(d / "authority.key") in out and "0600" in out
    assert mode_of(d / "authority.key") == 0o600
    assert mode_of(d) == 0o700
    assert (d / "authority.pub").read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    assert json.loads((d / "revocations.json").read_text())["revoked"] == []
    before = (d / "authority.key").read_bytes()
    code, out, err = run(capsys, "keys", "init", "--dir", str(d))
    assert code == 2 and out == ""
    assert err.startswith("autocell: error: ") and "already holds a cell authority" in err
    assert (d / "authority.key").read_bytes() == before


# -- issue --------------------------------------------------------------------------------

def test_issue_with_bad_role_names_the_valid_roles(keys: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "keys", "issue", "x1", "--role", "wizard", "--dir", str(keys))
    assert code == 2 and "'wizard'" in err
    for role in ROLES:
        assert role in err
    assert not (keys / "agents" / "x1.key").exists()


def test_issue_without_authority_gives_the_init_hint(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "nothing"
    code, out, err = run(capsys, "keys", "issue", "m1", "--role", "machine", "--dir", str(d))
    assert code == 2 and out == ""
    assert f"autocell keys init --dir {d}" in err


def test_issuing_an_existing_agent_is_refused(keys: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cert_before = (keys / "agents" / "m1.cert").read_bytes()
    code, _, err = run(capsys, "keys", "issue", "m1", "--role", "robot", "--dir", str(keys))
    assert code == 2 and "already has a key" in err and "autocell keys revoke m1" in err
    assert (keys / "agents" / "m1.cert").read_bytes() == cert_before


@pytest.mark.parametrize("agent", ["../evil", "a/b", ".hidden", "", "x" * 65, "sp ace"])
def test_issue_refuses_bad_agent_ids(keys: Path, capsys: pytest.CaptureFixture[str], agent: str) -> None:
    code, _, err = run(capsys, "keys", "issue", agent, "--role", "machine", "--dir", str(keys))
    assert code == 2 and "invalid agent id" in err
    assert sorted(p.name for p in (keys / "agents").iterdir()) == [
        "m1.cert", "m1.key", "o1.cert", "o1.key"]


@pytest.mark.parametrize("days", ["0", "-1"])
def test_issue_with_empty_validity_writes_nothing(keys: Path, capsys: pytest.CaptureFixture[str],
                                                  days: str) -> None:
    code, _, err = run(capsys, "keys", "issue", "m2", "--role", "machine", "--valid-days", days,
                       "--dir", str(keys))
    assert code == 2 and "validity" in err
    assert not (keys / "agents" / "m2.key").exists()
    assert run(capsys, "keys", "issue", "m2", "--role", "machine", "--dir", str(keys))[0] == 0


def test_key_files_are_0600_even_with_a_permissive_umask(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    old = os.umask(0)
    try:
        d = tmp_path / "keys"
        assert run(capsys, "keys", "init", "--dir", str(d))[0] == 0
        assert run(capsys, "keys", "issue", "m1", "--role", "machine", "--dir", str(d))[0] == 0
    finally:
        os.umask(old)
    assert mode_of(d / "authority.key") == 0o600
    assert mode_of(d / "agents" / "m1.key") == 0o600
    assert mode_of(d) == 0o700        # nobody else can even reach the certificates
    KeyDir(d).identity("m1")          # and the files it wrote load


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o606, 0o666])
def test_loading_a_readable_key_raises_with_the_fix(keys: Path, mode: int) -> None:
    path = keys / "agents" / "m1.key"
    path.chmod(mode)
    with pytest.raises(InsecureKeyFile) as info:
        load_private_key(path)
    assert f"chmod 600 {path}" in str(info.value)
    assert info.value.mode == mode and isinstance(info.value, ConfigurationError)
    with pytest.raises(InsecureKeyFile):
        KeyDir(keys).identity("m1")


@pytest.mark.parametrize("mode", [0o600, 0o400, 0o700])
def test_owner_only_key_modes_load(keys: Path, mode: int) -> None:
    path = keys / "agents" / "m1.key"
    path.chmod(mode)
    key, cert = KeyDir(keys).identity("m1")
    assert key.public_key == cert.public_key


def test_cli_refuses_a_readable_authority_key(keys: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = keys / "authority.key"
    path.chmod(0o640)
    code, _, err = run(capsys, "keys", "issue", "m2", "--role", "machine", "--dir", str(keys))
    assert code == 2 and f"chmod 600 {path}" in err
    code, _, err = run(capsys, "keys", "revoke", "m1", "--dir", str(keys))
    assert code == 2 and f"chmod 600 {path}" in err


# -- list / show ----------------------------------------------------------------------------

def test_list_and_show(keys: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "keys", "list", "--json", "--dir", str(keys))
    rows = json.loads(out)
    assert code == 0
    assert [(r["agent"], r["role"], r["revoked"]) for r in rows] == [
        ("m1", "machine", False), ("o1", "order", False)]
    assert sorted(r["serial"] for r in rows) == [1, 2]
    assert all(r["not_after_at"] > time.time() + 300 * 86400 for r in rows)

    code, out, _ = run(capsys, "keys", "list", "--dir", str(keys))
    assert code == 0 and "2 agent certificate(s)" in out
    lines = [line.split() for line in out.splitlines()[1:]]
    assert [(w[0], w[1], w[-1]) for w in lines] == [("m1", "machine", "valid"), ("o1", "order", "valid")]

    code, out, _ = run(capsys, "keys", "show", "m1", "--json", "--dir", str(keys))
    info = json.loads(out)
    cert = KeyDir(keys).certificate("m1")
    assert code == 0
    assert info["agent"] == "m1" and info["role"] == "machine" and info["serial"] == cert.serial
    assert info["signed_by_authority"] is True and info["revoked"] is False
    assert info["public_key_fingerprint"] == fingerprint(cert.public_key)
    assert info["private_key"] == str(keys / "agents" / "m1.key")
    assert info["certificate"] == str(keys / "agents" / "m1.cert")

    code, out, _ = run(capsys, "keys", "show", "o1", "--dir", str(keys))
    fields = dict(line.split(None, 1) for line in out.splitlines())
    assert code == 0 and fields["role"] == "order" and fields["signed_by_authority"] == "True"

    code, _, err = run(capsys, "keys", "show", "ghost", "--dir", str(keys))
    assert code == 2 and "no certificate for agent 'ghost'" in err


def test_list_without_authority_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "keys", "list", "--dir", str(tmp_path / "none"))
    assert code == 2 and out == "" and "autocell keys init" in err


# -- revoke -------------------------------------------------------------------------------

def test_revoke_makes_the_trust_store_reject_the_agent(keys: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    kd = KeyDir(keys)
    now = time.time()
    frames = envelope(kd, "m1", now)
    assert Opener(kd.trust_store(), ReplayGuard()).open(frames, now).sender == "m1"

    code, out, _ = run(capsys, "keys", "revoke", "m1", "--dir", str(keys))
    assert code == 0 and "revision 2" in out

    opener = Opener(kd.trust_store(), ReplayGuard())
    with pytest.raises(Revoked) as info:
        opener.open(frames, now)
    assert info.value.sender == "m1"
    assert opener.open(envelope(kd, "o1", now), now).sender == "o1"   # others unaffected

    rows = json.loads(run(capsys, "keys", "list", "--json", "--dir", str(keys))[1])
    assert {r["agent"]: r["revoked"] for r in rows} == {"m1": True, "o1": False}
    assert "REVOKED" in run(capsys, "keys", "list", "--dir", str(keys))[1]
    assert json.loads(run(capsys, "keys", "show", "m1", "--json", "--dir", str(keys))[1])["revoked"]

    code, _, err = run(capsys, "keys", "revoke", "m1", "--dir", str(keys))
    assert code == 2 and "already revoked" in err
    code, _, err = run(capsys, "keys", "revoke", "ghost", "--dir", str(keys))
    assert code == 2 and "no certificate" in err


def test_reissue_after_revoke_as_the_hint_says_gives_a_working_identity(
        keys: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Follow the CLI's own advice: revoke the old key, delete its files, issue again."""
    kd = KeyDir(keys)
    now = time.time()
    old_frames = envelope(kd, "m1", now)
    assert run(capsys, "keys", "revoke", "m1", "--dir", str(keys))[0] == 0
    (keys / "agents" / "m1.key").unlink()
    (keys / "agents" / "m1.cert").unlink()
    assert run(capsys, "keys", "issue", "m1", "--role", "machine", "--dir", str(keys))[0] == 0
    opener = Opener(kd.trust_store(), ReplayGuard())
    with pytest.raises(Exception):            # the old key is gone for good
        opener.open(old_frames, now)
    assert opener.open(envelope(kd, "m1", now + 1), now + 1).sender == "m1", (
        "a freshly issued certificate must not be covered by the old revocation")


# -- tampering and expiry -------------------------------------------------------------------

def test_certificate_edited_on_disk_is_refused(keys: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = keys / "agents" / "m1.cert"
    doc = json.loads(path.read_text())
    assert doc["role"] == "machine"
    doc["role"] = "order"
    path.write_text(json.dumps(doc))
    with pytest.raises(ConfigurationError) as info:
        KeyDir(keys).trust_store()
    assert "m1" in str(info.value) and "authority" in str(info.value)
    code, out, _ = run(capsys, "keys", "show", "m1", "--json", "--dir", str(keys))
    assert code == 0 and json.loads(out)["signed_by_authority"] is False


def test_revocation_list_edited_on_disk_is_refused(keys: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "keys", "revoke", "m1", "--dir", str(keys))[0] == 0
    path = keys / "revocations.json"
    doc = json.loads(path.read_text())
    doc["revoked"] = []                  # un-revoke by hand
    path.write_text(json.dumps(doc))
    with pytest.raises(ConfigurationError, match="revocation list"):
        KeyDir(keys).trust_store()


def test_expired_certificate_is_rejected_at_open_time(keys: Path) -> None:
    kd = KeyDir(keys)
    t0 = 1_000_000.0
    kd.issue("m9", "machine", t0, valid_s=10.0)
    opener = Opener(kd.trust_store(), None)
    assert opener.open(envelope(kd, "m9", t0 + 5), t0 + 5).sender == "m9"
    with pytest.raises(CertificateExpired) as info:
        opener.open(envelope(kd, "m9", t0 + 11), t0 + 11)
    assert info.value.sender == "m9" and info.value.reason == "certificate_expired"


def test_cli_tiny_validity_expires(keys: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "keys", "issue", "m8", "--role", "machine", "--valid-days", "1e-6",
                       "--dir", str(keys))
    assert code == 0 and "#3" in out
    kd = KeyDir(keys)
    later = time.time() + 60
    with pytest.raises(CertificateExpired):
        Opener(kd.trust_store(), None).open(envelope(kd, "m8", later), later)
    not_after_at = kd.certificate("m8").not_after_at
    assert not_after_at - time.time() < 0.1
    while time.time() <= not_after_at:     # at most 0.09 s: let the window close for `list`
        time.sleep(0.01)
    listing = run(capsys, "keys", "list", "--dir", str(keys))[1]
    assert [line.split()[-1] for line in listing.splitlines() if line.split()[0] == "m8"] == ["expired"]


# -- the installed console script -----------------------------------------------------------

def _console_script() -> str:
    beside = Path(sys.executable).with_name("autocell")
    found = str(beside) if beside.exists() else shutil.which("autocell")
    assert found, "the autocell console script is not installed (pip install -e .)"
    return found


@pytest.mark.timeout(60)
def test_installed_console_script(tmp_path: Path) -> None:
    exe = _console_script()
    d = tmp_path / "keys"

    def cli(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([exe, *argv], capture_output=True, text=True, timeout=30, cwd=tmp_path)

    assert cli("keys", "init", "--dir", str(d)).returncode == 0
    r = cli("keys", "issue", "m1", "--role", "machine", "--dir", str(d))
    assert r.returncode == 0 and "issued machine certificate #1 for 'm1'" in r.stdout
    r = cli("keys", "list", "--json", "--dir", str(d))
    assert r.returncode == 0 and [row["agent"] for row in json.loads(r.stdout)] == ["m1"]
    r = cli("keys", "init", "--dir", str(d))
    assert r.returncode == 2 and "already holds a cell authority" in r.stderr
    r = cli("keys", "issue", "m2", "--role", "nope", "--dir", str(d))
    assert r.returncode == 2 and "valid roles" in r.stderr
    assert mode_of(d / "agents" / "m1.key") == 0o600
    r = cli("--help")
    assert r.returncode == 0 and "keys" in r.stdout
