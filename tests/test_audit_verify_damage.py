"""``autocell audit verify FILE`` on damaged logs and on files that are no log at all.

A user review found a decision log with a damaged or missing header taken for a damaged
escalation store, the wrong entry named for an edit of an entry's ``prev``, a cut last
line, lines after the final seal and CRLF line endings all called "edited", line numbers
counted from 0, and a named pipe that hung the command.  Each case here: the exit code
(0 intact, 1 a log BROKEN at a named entry, 2 unusable input) and the words that say
what happened, on real logs recorded by ``autocell run`` (/2) and by ``SegmentLog`` (/4).
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from pathlib import Path

import pytest

from agents.runtime.flight_log import verify_log
from ops.cli import main
from tests.test_decision_log_segments import _log

ROOT = Path(__file__).resolve().parents[1]
DEMO = str(ROOT / "cell_configs" / "demo_cell.yaml")


@pytest.fixture(scope="module")
def text_log(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A /2 log of the demo cell (about 7000 lines, seven segments)."""
    tmp = tmp_path_factory.mktemp("log")
    assert main(["run", DEMO, "--quiet", "--seed", "1", "--decision-log",
                 str(tmp / "d.jsonl")]) == 0
    return (tmp / "d.jsonl").read_bytes()


@pytest.fixture(scope="module")
def binary_log(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A /4 log: the header and 24 entries in five segments."""
    return _log(tmp_path_factory.mktemp("seg") / "d.log").read_bytes()


def verify(path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, dict]:
    """``audit verify PATH --json``: the exit code and the summary."""
    code = main(["audit", "verify", str(path), "--json", *extra])
    return code, json.loads(capsys.readouterr().out)


def refused(path: Path | str, capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    """``audit verify`` refuses ``path``: exit 2 and one line on stderr, no traceback."""
    assert main(["audit", "verify", str(path), *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def lines(data: bytes) -> list[bytes]:
    return data.splitlines(keepends=True)


def _header_damage(data: bytes, how: str) -> bytes:
    first_nl = data.index(b"\n") + 1
    if how == "removed":
        return data[first_nl:]
    if how == "first_byte":
        return b"X" + data[1:]
    if how == "format9":
        return re.sub(rb"autocell-decision-log/\d", b"autocell-decision-log/9", data, count=1)
    assert how == "bom"
    return b"\xef\xbb\xbf" + data


HEADER_DAMAGE = [("removed", "header is missing"), ("first_byte", "header is damaged"),
                 ("format9", "autocell-decision-log/9"), ("bom", "byte-order mark")]


@pytest.mark.parametrize("how, words", HEADER_DAMAGE)
def test_a_text_log_with_its_header_damaged_is_broken_at_entry_0(
        text_log: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str], how: str,
        words: str) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(_header_damage(text_log, how))
    code, out = verify(path, capsys)
    assert code == 1 and out["kind"] == "decision_log", out
    assert out["first_bad_entry"] == 0 and words in out["problem"], out
    # --key cannot be checked without a header: still the header's problem, at entry 0
    key = json.loads(lines(text_log)[0])["key"]
    code, out = verify(path, capsys, "--key", key)
    assert code == 1 and out["first_bad_entry"] == 0 and words in out["problem"], out


@pytest.mark.parametrize("how, words", HEADER_DAMAGE)
def test_a_binary_log_with_its_header_damaged_is_broken_at_entry_0(
        binary_log: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str], how: str,
        words: str) -> None:
    path = tmp_path / "d.log"
    path.write_bytes(_header_damage(binary_log, how))
    code, out = verify(path, capsys)
    assert code == 1 and out["first_bad_entry"] == 0 and words in out["problem"], out


@pytest.mark.parametrize("content, words", [
    (b"", "the file is empty"),
    (b"root:x:0:0:root:/root:/bin/bash\n" * 20, "neither a decision log"),
    (b'{"a": 1}\n{"b": 2}\n', "neither a decision log"),
    (bytes(range(256)) * 40, "neither a decision log"),
])
def test_a_file_that_is_no_log_and_no_store_is_refused_in_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes,
        words: str) -> None:
    path = tmp_path / "x.jsonl"
    path.write_bytes(content)
    assert words in refused(path, capsys)


def test_an_sqlite_file_is_still_taken_for_a_store(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "other.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE t (x)")
    con.commit()
    con.close()
    assert "not an escalation store" in refused(path, capsys)


def _edit_prev(line: bytes) -> bytes:
    """One byte of the line's ``prev`` changed (the same length)."""
    at = line.index(b'"prev":"') + 12
    return line[:at] + (b"a" if line[at:at + 1] != b"a" else b"b") + line[at + 1:]


@pytest.mark.parametrize("edit, bad, words", [
    ("prev_700", 700, "(entry 700 edited)"),
    ("t_699", 699, "(entry 699 edited)"),
    ("n_700", 700, "(entry 700 edited)"),
    ("prev_final_seal", -1, "edited)"),
    ("remove_700", 700, "removed or reordered"),
    ("swap_700", 700, "removed or reordered"),
])
def test_the_edited_entry_is_the_one_named(text_log: bytes, tmp_path: Path,
                                           edit: str, bad: int, words: str) -> None:
    """The link into k broken and the link out of k broken: k was edited; only the link
    into k: k - 1 was.  Removals and reorders keep their own diagnosis."""
    text = lines(text_log)
    if edit == "prev_700":
        text[700] = _edit_prev(text[700])
    elif edit == "t_699":
        text[699] = text[699].replace(b'"t":', b'"t":1', 1)
    elif edit == "n_700":
        text[700] = text[700].replace(b'"n":700', b'"n":701', 1)
    elif edit == "prev_final_seal":
        text[-1] = _edit_prev(text[-1])
    elif edit == "remove_700":
        del text[700]
    else:
        text[700], text[701] = text[701], text[700]
    bad = bad % len(text)
    path = tmp_path / "d.jsonl"
    path.write_bytes(b"".join(text))
    rep = verify_log(path)
    assert not rep.ok and rep.bad_entry == bad, rep
    assert words in rep.problem and (words != "edited)" or f"entry {bad} edited" in rep.problem)


def test_a_log_cut_mid_line_is_called_cut_not_edited(text_log: bytes, tmp_path: Path) -> None:
    text = lines(text_log)
    seals = [i for i, line in enumerate(text) if b'"k":"seal"' in line]
    cut_at = seals[1] + 50
    path = tmp_path / "d.jsonl"
    path.write_bytes(b"".join(text[:cut_at]) + text[cut_at][:40])    # what kill -9 leaves
    rep = verify_log(path)
    assert not rep.ok and "edited" not in rep.problem, rep
    assert f"cut at entry {cut_at} (line {cut_at + 1}, the last, is incomplete" in rep.problem
    assert rep.bad_entry == seals[1] + 1       # the first entry no seal covers
    assert rep.cut                             # only cut: replay --check may still say OK
    # the same bytes with a newline after them are an edited line, named from 1
    path.write_bytes(b"".join(text[:cut_at]) + text[cut_at][:40] + b"\n")
    rep = verify_log(path)
    assert rep.bad_entry == cut_at and not rep.cut
    assert f"entry {cut_at} (line {cut_at + 1}) is not JSON (edited)" in rep.problem


def test_what_follows_the_final_seal_is_named_as_appended(text_log: bytes, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    import hashlib

    count = len(lines(text_log))
    path = tmp_path / "d.jsonl"
    path.write_bytes(text_log + b"hello, junk\n")
    rep = verify_log(path)
    assert not rep.ok and rep.bad_entry == count, rep
    assert f"line {count + 1} follows the final seal (entry {count - 1})" in rep.problem
    assert "edited" not in rep.problem and not rep.cut
    # a correctly chained entry after the final seal
    last = lines(text_log)[-1].rstrip(b"\n")
    extra = {"k": "rt", "t": 1.0, "event": "pause", "agent": "x", "n": count,
             "prev": hashlib.sha256(last).hexdigest()}
    path.write_bytes(text_log + json.dumps(extra).encode() + b"\n")
    code, out = verify(path, capsys)
    assert code == 1 and out["first_bad_entry"] == count, out
    assert f"entry {count} (line {count + 1}) and any after it follow the final seal" in \
        out["problem"] and "unsigned" not in out["problem"], out


def test_a_binary_log_with_bytes_after_its_final_seal(binary_log: bytes,
                                                      tmp_path: Path) -> None:
    path = tmp_path / "d.log"
    path.write_bytes(binary_log + b"junk")
    rep = verify_log(path)
    assert not rep.ok and rep.bad_entry == 25, rep
    assert "4 bytes follow the final seal (segment 5, after entry 24)" in rep.problem
    assert "unsigned" not in rep.problem and not rep.cut


def test_a_binary_log_cut_short_is_cut_not_damaged(binary_log: bytes, tmp_path: Path) -> None:
    """What a killed host leaves: whole segments, then part of one, or none after the last
    whole one (no final seal).  Both are ``cut``; an edited byte is not."""
    path = tmp_path / "d.log"
    for data in (binary_log[:-7], binary_log[:len(binary_log) // 2]):
        path.write_bytes(data)
        rep = verify_log(path)
        assert not rep.ok and rep.cut, rep
    flipped = bytearray(binary_log)
    flipped[len(flipped) // 2] ^= 0x40
    path.write_bytes(bytes(flipped))
    rep = verify_log(path)
    assert not rep.ok and not rep.cut, rep


def test_crlf_line_endings_are_named(text_log: bytes, binary_log: bytes,
                                     tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(text_log.replace(b"\n", b"\r\n"))
    rep = verify_log(path)
    assert not rep.ok and rep.bad_entry == 0 and "CRLF line endings" in rep.problem, rep
    assert "converted back to LF it verifies" in rep.problem
    # converted, then edited: the edit is still named
    text = lines(text_log)
    text[99] = text[99].replace(b'"t":', b'"t":1', 1)
    path.write_bytes(b"".join(text).replace(b"\n", b"\r\n"))
    rep = verify_log(path)
    assert "still BROKEN at entry 99" in rep.problem, rep
    # one line converted: that entry
    text = lines(text_log)
    text[99] = text[99].replace(b"\n", b"\r\n")
    path.write_bytes(b"".join(text))
    rep = verify_log(path)
    assert rep.bad_entry == 99 and "ends with a carriage return" in rep.problem, rep
    path = tmp_path / "d.log"
    path.write_bytes(binary_log.replace(b"\n", b"\r\n", 1))
    rep = verify_log(path)
    assert rep.bad_entry == 0 and "CR LF" in rep.problem, rep


@pytest.mark.timeout(20)
def test_a_named_pipe_is_refused_without_blocking(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert "not a regular file" in refused(fifo, capsys)


def test_missing_files_and_directories_are_named_as_such(
        text_log: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = refused(tmp_path / "nonexist.jsonl", capsys)
    assert "nonexist.jsonl: no such file" in err and "escalation store" not in err
    state = tmp_path / "state"
    state.mkdir()
    assert "state: is a directory;" in refused(state, capsys)
    (state / "escalations.db").write_bytes(b"")
    (state / "decisions-h1-1.jsonl").write_bytes(text_log)
    assert "(it holds escalations.db, decisions-h1-1.jsonl)" in refused(state, capsys)
    log = state / "decisions-h1-1.jsonl"
    err = refused(log, capsys, "--certs", str(tmp_path / "nonexistdir"))
    assert "--certs " in err and "nonexistdir: no such directory" in err
    assert "not a directory" in refused(log, capsys, "--certs", str(log))


def test_entries_are_counted_without_the_header(text_log: bytes, binary_log: bytes,
                                                tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """The count is of numbered entries (the header is entry 0): a /4 log of 24 entries
    says 24 (it said 25), a /2 log as many as its lines after the header (its seals are
    numbered lines)."""
    path = tmp_path / "d.log"
    path.write_bytes(binary_log)
    code, out = verify(path, capsys)
    assert code == 0 and out["entries"] == 24
    assert main(["audit", "verify", str(path)]) == 0
    assert capsys.readouterr().out.startswith("decision log OK: 24 entries in 5 signed")
    path = tmp_path / "d.jsonl"
    path.write_bytes(text_log)
    assert verify(path, capsys)[1]["entries"] == len(lines(text_log)) - 1


def test_a_cut_log_is_cut_not_broken(text_log: bytes, binary_log: bytes, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    """What a killed process leaves is said as such — CUT, where its signed part ends —
    not BROKEN; still exit 1 (the log is not closed), and ``cut`` in ``--json``."""
    for name, data in (("d.jsonl", text_log[:len(text_log) // 2]),
                       ("d.log", binary_log[:-7])):
        path = tmp_path / name
        path.write_bytes(data)
        code, out = verify(path, capsys)
        assert code == 1 and out["cut"] is True and not out["ok"], out
        assert main(["audit", "verify", str(path)]) == 1
        said = capsys.readouterr().out
        assert said.startswith(f"decision log CUT at entry {out['first_bad_entry']}: "), said
        assert said.rstrip().endswith(f"what precedes entry {out['first_bad_entry']} verifies")
    flipped = bytearray(text_log)
    flipped[len(flipped) // 2] ^= 0x01
    path = tmp_path / "e.jsonl"
    path.write_bytes(bytes(flipped))
    code, out = verify(path, capsys)
    assert code == 1 and out["cut"] is False
    assert main(["audit", "verify", str(path)]) == 1
    assert capsys.readouterr().out.startswith("decision log BROKEN at entry ")
