"""Benchmark parsing, bounds file and the instance -> cell-config bridge."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sim_bridge.instances import (
    BksRow,
    Instance,
    InstanceError,
    Operation,
    instance_path,
    instance_to_cell_dict,
    load_bks,
    load_instance,
)

BENCH_DIR = Path(__file__).resolve().parents[2] / "shared" / "benchmarks" / "fjsp"
BKS = load_bks(BENCH_DIR / "bks.csv")


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------
# the shipped benchmark set


def test_bks_lists_every_instance_file() -> None:
    files = {p.name for p in BENCH_DIR.iterdir() if p.suffix in (".fjs", ".jsp")}
    assert files == {instance_path(row, BENCH_DIR).name for row in BKS}
    assert len(BKS) == 12


@pytest.mark.parametrize("row", BKS, ids=lambda r: r.instance)
def test_benchmark_instance_matches_bks(row: BksRow) -> None:
    inst = load_instance(instance_path(row, BENCH_DIR))
    assert inst.name == row.instance
    assert (inst.n_jobs, inst.n_machines) == (row.jobs, row.machines)
    assert len(inst.jobs) == row.jobs
    assert row.lower_bound <= row.best_known_upper
    for job, ops in enumerate(inst.jobs):
        assert ops, "every job has at least one operation"
        for index, op in enumerate(ops):
            assert (op.job, op.index) == (job, index)
            assert op.options
            assert all(0 <= m < inst.n_machines and p >= 0 for m, p in op.options)
        if row.format == "orlib":
            # classic job shop: one machine per op, every machine once per job
            assert all(len(op.options) == 1 for op in ops)
            assert sorted(op.machines[0] for op in ops) == list(range(inst.n_machines))


def test_jsp_values_are_read_verbatim() -> None:
    ft06 = load_instance(BENCH_DIR / "ft06.jsp")
    assert [op.options for op in ft06.jobs[0]] == [
        ((2, 1),), ((0, 3),), ((1, 6),), ((3, 7),), ((5, 3),), ((4, 6),)
    ]


def test_fjs_machines_are_shifted_to_zero_based() -> None:
    mk01 = load_instance(BENCH_DIR / "mk01.fjs")
    # file line 2: "6  2 1 5 3 4  3 5 3 3 5 2 1 ..."
    assert len(mk01.jobs[0]) == 6
    assert mk01.jobs[0][0] == Operation(0, 0, ((0, 5), (2, 4)))
    assert mk01.jobs[0][1] == Operation(0, 1, ((4, 3), (2, 5), (1, 1)))


# --------------------------------------------------------------------------
# lenient layout


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("plain.fjs", "2 3\n2 2 1 5 3 4 1 2 6\n1 1 3 2\n"),
        ("third.fjs", "2\t3\t1.5\n2 2 1 5 3 4 1 2 6\n1 1 3 2\n"),
        ("tabs.fjs", "2\t3\n2\t2\t1\t5\t3\t4\t1\t2\t6\t \n 1  1 3 2   \n"),
        ("blank.fjs", "\n2 3\n\n2 2 1 5 3 4 1 2 6\n\t\t\n1 1 3 2\n\n\n"),
        ("crlf.fjs", "2 3 2\r\n2 2 1 5 3 4 1 2 6\r\n1 1 3 2\r\n"),
    ],
)
def test_fjs_layout_variants_parse_identically(
    tmp_path: Path, name: str, text: str
) -> None:
    inst = load_instance(_write(tmp_path, name, text))
    assert inst == Instance(
        name=Path(name).stem,
        n_jobs=2,
        n_machines=3,
        jobs=(
            (Operation(0, 0, ((0, 5), (2, 4))), Operation(0, 1, ((1, 6),))),
            (Operation(1, 0, ((2, 2),)),),
        ),
    )


def test_jsp_comments_tabs_and_blank_lines(tmp_path: Path) -> None:
    text = "# instance tiny\n#++++\n\n2 2\n0 3\t1 4  \n\n 1 2 0 5\n# trailer\n"
    inst = load_instance(_write(tmp_path, "tiny.jsp", text))
    assert inst.jobs == (
        (Operation(0, 0, ((0, 3),)), Operation(0, 1, ((1, 4),))),
        (Operation(1, 0, ((1, 2),)), Operation(1, 1, ((0, 5),))),
    )


# --------------------------------------------------------------------------
# malformed files: (file name, contents, line reported, words in the message)

MALFORMED = [
    ("empty.fjs", "\n\n", 1, "no header"),
    ("header.fjs", "2\n1 1 1 2\n", 1, "header has 1 numbers"),
    ("header4.fjs", "1 2 3 4\n1 1 1 2\n", 1, "header has 4 numbers"),
    ("zero.fjs", "0 2\n", 1, "at least 1"),
    ("third.fjs", "1 2 x\n1 1 1 2\n", 1, "third header number"),
    ("token.fjs", "1 2\n1 1 1 two\n", 2, "token 4 ('two') is not an integer"),
    ("float.fjs", "1 2\n1 1 1 2.5\n", 2, "is not an integer"),
    ("fewpairs.fjs", "1 2\n2 2 1 5 2\n", 2, "declares 2 eligible machines"),
    ("fewops.fjs", "1 2\n2 1 1 5\n", 2, "only 1 are present"),
    ("extra.fjs", "1 2\n1 1 1 5 9\n", 2, "1 extra token"),
    ("range.fjs", "1 2\n1 1 3 5\n", 2, "machine 3 is out of range 1..2"),
    ("range0.fjs", "1 2\n1 1 0 5\n", 2, "machine 0 is out of range 1..2"),
    ("nomach.fjs", "1 2\n1 0\n", 2, "0 eligible machines"),
    ("dup.fjs", "1 2\n1 2 1 5 1 6\n", 2, "machine 1 is listed twice"),
    ("neg.fjs", "1 2\n1 1 1 -5\n", 2, "negative"),
    ("noops.fjs", "1 2\n0\n", 2, "0 operations"),
    ("missing.fjs", "3 2\n1 1 1 5\n\n1 1 2 5\n", 4, "file ends after 2 job lines"),
    ("toomany.fjs", "1 2\n1 1 1 5\n\n1 1 2 5\n", 4, "unexpected line"),
    ("header.jsp", "# c\n2 2 1\n0 1 1 1\n1 1 0 1\n", 2, "header has 3 numbers"),
    ("odd.jsp", "# c\n2 2\n0 1 1\n1 1 0 1\n", 3, "expected 2 (machine, time) pairs"),
    ("short.jsp", "2 2\n0 1 1 1\n1 1\n", 3, "has 2 numbers"),
    ("range.jsp", "2 2\n0 1 1 1\n2 1 0 1\n", 3, "machine 2 is out of range 0..1"),
    ("token.jsp", "2 2\n0 1 1 1\n1 1 0 x\n", 3, "('x') is not an integer"),
    ("missing.jsp", "# c\n2 2\n0 1 1 1\n", 3, "file ends after 1 job lines"),
]


@pytest.mark.parametrize(
    ("name", "text", "line", "words"), MALFORMED, ids=[m[0] for m in MALFORMED]
)
def test_malformed_file_names_file_and_line(
    tmp_path: Path, name: str, text: str, line: int, words: str
) -> None:
    path = _write(tmp_path, name, text)
    with pytest.raises(InstanceError) as info:
        load_instance(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{line}: "), message
    assert words in message


def test_unknown_extension_lists_supported_ones(tmp_path: Path) -> None:
    path = _write(tmp_path, "mk01.txt", "1 1\n1 1 1 1\n")
    with pytest.raises(InstanceError, match=r"\.fjs, \.jsp"):
        load_instance(path)


def test_missing_file_is_an_instance_error(tmp_path: Path) -> None:
    with pytest.raises(InstanceError, match="cannot read"):
        load_instance(tmp_path / "absent.fjs")


def test_instance_error_is_a_value_error() -> None:
    assert issubclass(InstanceError, ValueError)


# --------------------------------------------------------------------------
# bks.csv


def test_bks_rows_are_typed() -> None:
    mk01 = BKS[0]
    assert mk01 == BksRow(
        instance="mk01",
        format="fjs",
        jobs=10,
        machines=6,
        lower_bound=40,
        best_known_upper=40,
        source=mk01.source,
    )
    assert instance_path(mk01, BENCH_DIR) == BENCH_DIR / "mk01.fjs"
    ft06 = next(row for row in BKS if row.instance == "ft06")
    assert instance_path(ft06, "x") == Path("x") / "ft06.jsp"


HEADER = "instance,format,jobs,machines,lower_bound,best_known_upper,source\n"


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("instance,format,jobs\nmk01,fjs,10\n", 1, "missing column(s) machines"),
        (HEADER + "mk01,fjs,10,6,40,40,x\nmk02,txt,10,6,1,1,x\n", 3, "unknown format"),
        (HEADER + "mk01,fjs,10,6,forty,40,x\n", 2, "lower_bound ('forty')"),
    ],
)
def test_malformed_bks(tmp_path: Path, text: str, line: int, words: str) -> None:
    path = _write(tmp_path, "bks.csv", text)
    with pytest.raises(InstanceError) as info:
        load_bks(path)
    assert str(info.value).startswith(f"{path}:{line}: ")
    assert words in str(info.value)


# --------------------------------------------------------------------------
# cell-config bridge

CELL_KEYS = {
    "cell", "layout", "machines", "robots", "products", "orders", "negotiation", "sim"
}


@pytest.mark.parametrize("row", BKS, ids=lambda r: r.instance)
def test_cell_dict_shape(row: BksRow) -> None:
    inst = load_instance(instance_path(row, BENCH_DIR))
    cell = instance_to_cell_dict(inst)
    assert set(cell) == CELL_KEYS
    assert cell["cell"] == row.instance
    assert cell["layout"] == {
        "locations": [{"id": "floor", "x": 0, "y": 0}], "input": None, "output": None
    }
    assert cell["robots"] == []
    # negotiation runs in hundredths of a benchmark time unit
    assert cell["negotiation"]["reply_deadline_s"] <= 0.01
    assert cell["sim"]["seed"] == 0 and cell["sim"]["network"]["latency_s"] <= 0.001

    machines = cell["machines"]
    assert len(machines) == inst.n_machines
    assert len({m["id"] for m in machines}) == inst.n_machines
    width = len(str(inst.n_machines))
    assert [m["id"] for m in machines] == sorted(m["id"] for m in machines)
    for m in machines:
        assert set(m) == {
            "id", "location", "capabilities", "setup_s", "power_kw",
            "mtbf_s", "mttr_s", "scrap_rate",
        }
        assert len(m["id"]) == 1 + width and m["location"] == "floor"
        assert m["power_kw"] == {"idle": 0, "busy": 1}
        assert m["mtbf_s"] is None and m["scrap_rate"] == 0 and m["setup_s"] == 0

    # every operation option survives as (machine, capability) -> time
    by_id = {m["id"]: m["capabilities"] for m in machines}
    ids = [m["id"] for m in machines]
    assert len(cell["products"]) == len(cell["orders"]) == inst.n_jobs
    for ops, product, order in zip(inst.jobs, cell["products"], cell["orders"]):
        assert [step["capability"] for step in product["routing"]] == [
            f"{order['id']}.O{op.index + 1}" for op in ops
        ]
        for op, step in zip(ops, product["routing"]):
            offered = {
                machine: caps[step["capability"]]
                for machine, caps in by_id.items()
                if step["capability"] in caps
            }
            assert offered == {ids[m]: p for m, p in op.options}
        assert order["product"] == product["id"]
        assert order["quantity"] == 1 and order["priority"] == 1
        assert order["due_at"] > order["release_at"] == 0

    assert yaml.safe_load(yaml.safe_dump(cell)) == cell


def test_cell_ids_are_zero_padded_and_name_sanitised(tmp_path: Path) -> None:
    jobs = "".join("1 1 {} 3\n".format(j % 10 + 1) for j in range(10))
    inst = load_instance(_write(tmp_path, "My Shop#2.fjs", f"10 10\n{jobs}"))
    cell = instance_to_cell_dict(inst)
    assert cell["cell"] == "my_shop_2"
    assert [m["id"] for m in cell["machines"]][:2] == ["M01", "M02"]
    assert cell["machines"][-1]["id"] == "M10"
    assert cell["products"][0] == {
        "id": "P01", "routing": [{"op": "O1", "capability": "J01.O1"}]
    }
    assert cell["orders"][9]["id"] == "J10"
    assert cell["orders"][0]["due_at"] == 9
    assert cell["machines"][0]["capabilities"] == {"J01.O1": 3}


def test_zero_time_option_cannot_become_a_capability(tmp_path: Path) -> None:
    inst = load_instance(_write(tmp_path, "zero.fjs", "1 2\n1 2 1 0 2 4\n"))
    assert inst.jobs[0][0].options == ((0, 0), (1, 4))
    with pytest.raises(InstanceError, match="operation 1 takes 0 on machine 1"):
        instance_to_cell_dict(inst)


def test_large_instances_rehearse_fewer_passes_and_say_what_bounds_them(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 20, class 2: a 200 x 20 job shop at 250 passes did not end in 120 s.  Up to 500
    operations nothing changes; above, passes x operations stays at 125 000 (at least 3),
    and `autocell run` says before it starts what bounds the run."""
    from ops.config import load_cell_or_instance
    from ops.run import note_large_instance
    from sim_bridge.instances import rehearsal_passes

    assert rehearsal_passes(500) == 250 and rehearsal_passes(1000) == 125
    assert rehearsal_passes(4000) == 31 and rehearsal_passes(10**6) == 3
    path = tmp_path / "big.jsp"
    path.write_text("60 10\n" + "".join(
        " ".join(f"{m} {1 + (j + m) % 9}" for m in range(10)) + "\n" for j in range(60)))
    cfg = load_cell_or_instance(path)
    assert cfg.negotiation.rehearsal_passes == 208
    note_large_instance(cfg, str(path))
    err = capsys.readouterr().err
    assert "600 operations of 60 jobs" in err and "208 passes" in err and "min" in err
