"""Cell configuration: models, FILE:LINE errors, cross-checks, schema, example cells.

Most error tests edit one line of ``BASE`` (a valid cell whose line numbers
are pinned below) and assert the exact ``FILE:LINE: path: message`` issue.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from ops.config import (
    CellConfig,
    ConfigError,
    ConfigIssue,
    cell_from_dict,
    cell_schema,
    format_path,
    load_cell,
    load_cell_or_instance,
    validate_command,
    write_schema,
)
from ops.config.schema import SCHEMA_PATH, schema_text

ROOT = Path(__file__).resolve().parents[1]
CELLS = ROOT / "cell_configs"
BAD = Path(__file__).resolve().parent / "data" / "bad_configs"

BASE = """\
cell: base-cell
layout:
  locations:
    - {id: store, x: 0.0, y: 0.0}
    - {id: bay1, x: 10.0, y: 0.0}
    - {id: bay2, x: 10.0, y: 8.0}
  input: store
  output: store
machines:
  - id: mill1
    location: bay1
    capabilities: {milling: 30.0, deburr: 12.0}
    setup_s: 8.0
    power_kw: {idle: 0.8, busy: 6.5}
    mtbf_s: 7200
    mttr_s: 300
    scrap_rate: 0.01
  - id: drill1
    location: bay2
    capabilities: {drilling: 15.0}
robots:
  - id: agv1
    home: store
    speed_m_per_s: 1.2
    load_s: 4.0
    transport_s: {store: {bay1: 20}}
products:
  - id: bracket
    routing:
      - {op: cut, capability: milling}
      - {op: drill, capability: drilling}
orders:
  - {id: o-001, product: bracket, quantity: 2, release_at: 0, due_at: 900, priority: 1}
  - {id: o-002, product: bracket, quantity: 1, release_at: 60, due_at: 1200}
negotiation:
  lease_s: 30
  heartbeat_interval_s: 5
hosts:
  - {name: h1, endpoint: "tcp://127.0.0.1:5601", agents: [mill1, o-001]}
  - {name: h2, endpoint: "tcp://127.0.0.1:5602", agents: [drill1]}
security: {keys_dir: ./keys}
sim:
  seed: 1
  network: {latency_s: 0.001, loss: 0.0}
"""
BASE_LINES = BASE.splitlines()


def write_cell(directory: Path, text: str, name: str = "cell.yaml", keys: bool = True) -> Path:
    if keys:
        (directory / "keys").mkdir(exist_ok=True)
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def edit(line: int, new: str) -> str:
    """BASE with 1-based ``line`` replaced; line numbers of everything else are kept."""
    lines = list(BASE_LINES)
    lines[line - 1] = new
    return "\n".join(lines) + "\n"


def issues_of(path: Path) -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as caught:
        load_cell(path)
    return caught.value.issues


# --------------------------------------------------------------------------- valid cells


def test_base_cell_is_valid(tmp_path: Path) -> None:
    config = load_cell(write_cell(tmp_path, BASE))
    assert config.cell == "base-cell"
    assert config.keys_dir_path() == (tmp_path / "keys").resolve()


@pytest.mark.parametrize("name", ["demo_cell.yaml", "minimal_cell.yaml"])
def test_example_cells_validate(name: str) -> None:
    code, text = validate_command(CELLS / name)
    assert code == 0, text
    assert text.startswith(f"{CELLS / name}: OK — cell ")


def test_validate_command_summary() -> None:
    path = CELLS / "demo_cell.yaml"
    assert validate_command(path) == (
        0,
        f"{path}: OK — cell 'demo-cell': 5 machines, 2 robots, 3 products, 24 orders",
    )
    minimal = CELLS / "minimal_cell.yaml"
    assert validate_command(minimal)[1].endswith(
        "cell 'minimal': 1 machine, 0 robots, 1 product, 1 order"
    )


def test_demo_cell_is_a_realistic_workload() -> None:
    config = load_cell(CELLS / "demo_cell.yaml")
    assert len(config.machines) >= 5 and len(config.robots) == 2
    assert len(config.layout.locations) >= 6 and len(config.orders) >= 24
    overlapping = [c for c in config.capabilities() if len(config.capable_machines(c)) >= 2]
    assert len(overlapping) >= 2
    assert any(m.mtbf_s for m in config.machines) and any(not m.mtbf_s for m in config.machines)
    assert all(10 <= t <= 90 for m in config.machines for t in m.capabilities.values())
    assert all(2 <= len(p.routing) <= 4 for p in config.products)
    assert all(1 <= o.quantity <= 5 for o in config.orders)
    assert len({o.release_at for o in config.orders}) > 12  # staggered releases
    assert config.security.keys_dir is None
    work_s = sum(
        o.quantity * min(config.machine(m).capabilities[op.capability]
                         for m in config.capable_machines(op.capability))
        for o in config.orders
        for op in config.product(o.product).routing
    )
    assert work_s / len(config.machines) < 3600  # fits the 1-2 h target with room to spare
    assert max(o.due_at for o in config.orders) <= 2 * 3600


# --------------------------------------------------------------------------- one error each

CASES = [
    # (id, line, replacement, expected line, expected path, message fragment)
    ("bad cell id", 1, "cell: Base Cell", 1, "cell", "lower-case letters"),
    ("layout input unknown", 7, "  input: dock", 7, "layout.input", "unknown location 'dock'"),
    ("layout output unknown", 8, "  output: shipp", 8, "layout.output", "unknown location 'shipp'"),
    ("duplicate location", 6, "    - {id: bay1, x: 1.0, y: 8.0}", 6, "layout.locations[2].id",
     "duplicate location id 'bay1', already used by layout.locations[1].id (line 5)"),
    ("missing coordinate", 5, "    - {id: bay1, x: 10.0}", 5, "layout.locations[1].y",
     "required key is missing"),
    ("machine location unknown", 11, "    location: bay9", 11, "machines[0].location",
     "unknown location 'bay9' (did you mean"),
    ("missing key on block item", 11, "    # location removed", 10, "machines[0].location",
     "required key is missing"),
    ("unknown key", 17, "    scrap_rat: 0.01", 17, "machines[0].scrap_rat",
     "unknown key 'scrap_rat' (did you mean 'scrap_rate'?)"),
    ("negative setup", 13, "    setup_s: -1", 13, "machines[0].setup_s",
     "greater than or equal to 0 (got -1)"),
    ("zero processing time", 20, "    capabilities: {drilling: 0}", 20,
     "machines[1].capabilities.drilling", "greater than 0"),
    ("busy below idle", 14, "    power_kw: {idle: 2.0, busy: 1.0}", 14, "machines[0].power_kw",
     "busy (1.0 kW) is below idle (2.0 kW)"),
    ("mtbf without mttr", 16, "    # mttr_s removed", 15, "machines[0].mtbf_s",
     "mttr_s is missing"),
    ("scrap rate above 1", 17, "    scrap_rate: 1.5", 17, "machines[0].scrap_rate",
     "less than or equal to 1"),
    ("duplicate yaml key", 17, "    setup_s: 9", 17, "machines[0].setup_s",
     "duplicate key (first at line 13)"),
    ("agent id reused by robot", 22, "  - id: mill1", 22, "robots[0].id",
     "duplicate agent id 'mill1', already used by machines[0].id (line 10)"),
    ("robot home unknown", 23, "    home: dock", 23, "robots[0].home", "unknown location 'dock'"),
    ("speed not a number", 24, "    speed_m_per_s: fast", 24, "robots[0].speed_m_per_s",
     "valid number"),
    ("negative load time", 25, "    load_s: -4", 25, "robots[0].load_s",
     "greater than or equal to 0"),
    ("transport to unknown", 26, "    transport_s: {store: {dock: 20}}", 26,
     "robots[0].transport_s.store.dock", "unknown location 'dock'"),
    ("transport from unknown", 26, "    transport_s: {dock: {bay1: 20}}", 26,
     "robots[0].transport_s.dock", "unknown location 'dock'"),
    ("negative transport time", 26, "    transport_s: {store: {bay1: -20}}", 26,
     "robots[0].transport_s.store.bay1", "greater than or equal to 0"),
    ("capability nobody offers", 31, "      - {op: drill, capability: welding}", 31,
     "products[0].routing[1].capability", "no machine offers capability 'welding'"),
    ("operation twice", 31, "      - {op: cut, capability: drilling}", 31,
     "products[0].routing[1].op", "operation 'cut' appears twice"),
    ("unknown product", 34,
     "  - {id: o-002, product: brakcet, quantity: 1, release_at: 60, due_at: 1200}", 34,
     "orders[1].product", "unknown product 'brakcet' (did you mean 'bracket'?)"),
    ("duplicate order id", 34,
     "  - {id: o-001, product: bracket, quantity: 1, release_at: 60, due_at: 1200}", 34,
     "orders[1].id", "duplicate agent id 'o-001'"),
    ("due before release", 34,
     "  - {id: o-002, product: bracket, quantity: 1, release_at: 60, due_at: 30}", 34,
     "orders[1].due_at", "due_at (30 s) is not after release_at (60 s)"),
    ("negative release", 34,
     "  - {id: o-002, product: bracket, quantity: 1, release_at: -5, due_at: 1200}", 34,
     "orders[1].release_at", "greater than or equal to 0"),
    ("missing due date", 34, "  - {id: o-002, product: bracket}", 34, "orders[1].due_at",
     "required key is missing"),
    ("zero quantity", 34,
     "  - {id: o-002, product: bracket, quantity: 0, release_at: 60, due_at: 1200}", 34,
     "orders[1].quantity", "greater than or equal to 1"),
    ("lease not above heartbeat", 36, "  lease_s: 5", 36, "negotiation.lease_s",
     "must be longer than heartbeat_interval_s"),
    ("unknown policy", 37, "  interrupted_operation: maybe", 37,
     "negotiation.interrupted_operation", "'restart_elsewhere' or 'wait_for_repair'"),
    ("unknown strategy", 37, "  strategy: {order: earliest_finsh}", 37,
     "negotiation.strategy.order", "unknown strategy 'earliest_finsh'"),
    ("strategy without params given some", 37,
     "  strategy: {order: {name: earliest_finish, params: {x: 1}}}", 37,
     "negotiation.strategy.order.params",
     "strategy 'earliest_finish' takes no parameters (got 'x'); name it bare"),
    ("unknown strategy parameter", 37,
     "  strategy: {resource: {name: slack_bidding, params: {work_wieght: 2}}}", 37,
     "negotiation.strategy.resource.params.work_wieght",
     "unknown parameter 'work_wieght' of strategy 'slack_bidding' (did you mean 'work_weight'?)"),
    ("strategy parameter of the wrong type", 37,
     "  strategy: {resource: {name: slack_bidding, params: {work_weight: heavy}}}", 37,
     "negotiation.strategy.resource.params.work_weight", "valid number"),
    ("strategy parameter out of range", 37,
     "  strategy: {order: {name: lowest_cost, params: {energy_s_per_kwh: -1}}}", 37,
     "negotiation.strategy.order.params.energy_s_per_kwh",
     "greater than or equal to 0 (got -1)"),
    ("strategy form unknown key", 37, "  strategy: {order: {name: lowest_cost, parms: {}}}", 37,
     "negotiation.strategy.order.parms", "unknown key 'parms' (did you mean 'params'?)"),
    ("a time with its unit", 33,
     "  - {id: o-001, product: bracket, quantity: 2, release_at: 0, due_at: 15min}", 33,
     "orders[0].due_at", "due_at is a number of seconds, without a unit: write `due_at: 900` "
     "(got '15min')"),
    ("a machine named where its capability goes", 30, "      - {op: cut, capability: mill1}",
     30, "products[0].routing[0].capability",
     "'mill1' is a machine: a routing names the capability a machine offers (milling, "
     "deburr)"),
    ("an agent misspelt beside the one it resembles", 39,
     '  - {name: h1, endpoint: "tcp://127.0.0.1:5601", agents: [mill1, mil1, o-001]}', 39,
     "hosts[0].agents[1]", "unknown agent 'mil1' (did you mean 'drill1'?)"),
    ("strategy with a dot before its class", 37, "  strategy: {order: mylab.strategies.Mine}",
     37, "negotiation.strategy.order",
     "(did you mean 'mylab.strategies:Mine'? the class comes after a colon)"),
    ("strategy form without name", 37, "  strategy: {order: {params: {}}}", 37,
     "negotiation.strategy.order.name", "required key is missing"),
    ("host lists unknown agent", 40,
     '  - {name: h2, endpoint: "tcp://127.0.0.1:5602", agents: [drill1, ghost]}', 40,
     "hosts[1].agents[1]", "unknown agent 'ghost'"),
    ("agent on two hosts", 40,
     '  - {name: h2, endpoint: "tcp://127.0.0.1:5602", agents: [mill1]}', 40,
     "hosts[1].agents[0]", "agent 'mill1' is already placed by hosts[0].agents[0] (line 39)"),
    ("duplicate host name", 40,
     '  - {name: h1, endpoint: "tcp://127.0.0.1:5602", agents: [drill1]}', 40,
     "hosts[1].name", "duplicate host name 'h1'"),
    ("host on the simulator's endpoint", 40,
     '  - {name: h2, endpoint: "tcp://127.0.0.1:5600", agents: [drill1]}', 40,
     "hosts[1].endpoint", "duplicate host endpoint 'tcp://127.0.0.1:5600', already used by "
     "sim.endpoint (its default); each process needs its own"),
    ("one port under two names", 40,
     '  - {name: h2, endpoint: "tcp://localhost:5601", agents: [drill1]}', 40,
     "hosts[1].endpoint", "already used by hosts[0].endpoint (line 39)"),
    ("simulator on the console agent's endpoint", 44, '  endpoint: "tcp://*:5599"', 44,
     "sim.endpoint", "endpoint 'tcp://*:5599' is already bound by escalation.console_endpoint "
     "(its default); each process needs its own"),
    ("bad endpoint", 40, '  - {name: h2, endpoint: "udp://x", agents: [drill1]}', 40,
     "hosts[1].endpoint", "ZeroMQ endpoint"),
    ("keys dir missing", 41, "security: {keys_dir: ./no-keys}", 41, "security.keys_dir",
     "does not exist"),
    ("loss above 1", 44, "  network: {latency_s: 0.001, loss: 2}", 44, "sim.network.loss",
     "less than or equal to 1"),
    ("escalation unknown key", 45,
     "escalation: {repeat_faults: {count: 3, window_s: 60, burst: 1}}", 45,
     "escalation.repeat_faults.burst", "unknown key 'burst'"),
    ("escalation bad count", 45, "escalation: {reject_burst: {count: 0, window_s: 60}}", 45,
     "escalation.reject_burst.count", "greater than or equal to 1"),
]


@pytest.mark.parametrize(
    ("line", "new", "want_line", "want_path", "fragment"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_each_error_points_at_file_line_and_path(
    tmp_path: Path, line: int, new: str, want_line: int, want_path: str, fragment: str
) -> None:
    text = edit(line, new) if line <= len(BASE_LINES) else BASE + new + "\n"
    path = write_cell(tmp_path, text)
    code, report = validate_command(path)
    assert code == 2
    prefix = f"{path}:{want_line}: {want_path}: "
    matching = [row for row in report.splitlines() if row.startswith(prefix)]
    assert matching, f"no issue starting {prefix!r} in:\n{report}"
    assert any(fragment in row for row in matching), report


def test_a_strategy_name_the_schema_refuses_is_told_once(tmp_path: Path) -> None:
    path = write_cell(tmp_path, edit(37, "  strategy: {order: mylab.strategies.Mine}"))
    code, report = validate_command(path)
    assert code == 2
    assert len([r for r in report.splitlines() if "negotiation.strategy.order" in r]) == 1
    assert "slack_bidding" not in report        # no resource plug-in offered to the order side


def test_strategy_params_in_block_style_point_at_their_own_lines(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ops.cli import main
    text = BASE.replace("  heartbeat_interval_s: 5\n", """\
  heartbeat_interval_s: 5
  strategy:
    order: earliest_finish
    resource:
      name: slack_bidding
      params:
        priority_weight_s: 600
        work_wieght: 2
""")
    path = write_cell(tmp_path, text)
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr()
    assert (f"{path}:44: negotiation.strategy.resource.params.work_wieght: unknown parameter "
            "'work_wieght' of strategy 'slack_bidding' (did you mean 'work_weight'?); its "
            "parameters: work_weight, priority_weight_s") in err.out + err.err
    fixed = write_cell(tmp_path, text.replace("work_wieght", "work_weight"), name="ok.yaml")
    config = load_cell(fixed)
    assert config.negotiation.strategy.order == "earliest_finish"   # a bare name stays a str
    resource = config.negotiation.strategy.resource
    assert (resource.name, resource.params) == ("slack_bidding",
                                                {"priority_weight_s": 600, "work_weight": 2})


def test_a_boolean_for_a_number_is_listed_with_the_other_problems(tmp_path: Path) -> None:
    """`priority: true` used to be told only once every other type error was fixed."""
    text = BASE.replace("quantity: 2, release_at: 0, due_at: 900, priority: 1",
                        "quantity: 2.5, release_at: 0, due_at: 900, priority: true"
                        ).replace("lease_s: 30", "lease_s: false")
    assert text != BASE and "priority: true" in text and "lease_s: false" in text
    code, report = validate_command(write_cell(tmp_path, text))
    assert code == 2
    assert "quantity: Input should be a valid integer" in report
    assert "priority: expected a number, got true" in report
    assert "negotiation.lease_s: expected a number, got false" in report
    # alone, each is told the same way as before (from the built model)
    alone = BASE.replace("lease_s: 30", "lease_s: false")
    code, report = validate_command(write_cell(tmp_path, alone, name="alone.yaml"))
    assert code == 2 and report.strip().endswith("negotiation.lease_s: expected a number, "
                                                 "got false")


def test_endpoints_clash_only_where_up_would_bind_them(tmp_path: Path) -> None:
    """Without hosts nothing binds the simulator's or the console's endpoint; without an
    escalation rule on, `up` starts no console agent."""
    no_hosts = BASE.split("hosts:")[0] + BASE.split("security:")[1].join(["security:", ""])
    no_hosts = no_hosts.replace("  seed: 1\n", '  seed: 1\n  endpoint: "tcp://127.0.0.1:5599"\n')
    assert "hosts:" not in no_hosts and "5599" in no_hosts
    assert validate_command(write_cell(tmp_path, no_hosts, name="a.yaml"))[0] == 0
    quiet = BASE.replace("  seed: 1\n", '  seed: 1\n  endpoint: "tcp://127.0.0.1:5599"\n') + \
        "escalation: {no_capable_resource: {enabled: false}, late_reroute: {enabled: false}," \
        " repeat_faults: {enabled: false}, restart_intensity: {enabled: false}," \
        " quality_reject: {enabled: false}, reject_burst: {enabled: false}}\n"
    code, report = validate_command(write_cell(tmp_path, quiet, name="b.yaml"))
    assert code == 0, report
    loud = BASE.replace("  seed: 1\n", '  seed: 1\n  endpoint: "tcp://127.0.0.1:5599"\n')
    code, report = validate_command(write_cell(tmp_path, loud, name="c.yaml"))
    assert code == 2 and "already bound by escalation.console_endpoint (its default)" in report


def test_the_colon_hint_is_for_strategies_only(tmp_path: Path) -> None:
    code, report = validate_command(write_cell(tmp_path, BASE.replace("cell: base-cell",
                                                                      "cell: My.Cell")))
    assert code == 2 and "did you mean" not in report and "after a colon" not in report


def test_a_duplicate_key_is_told_before_what_follows_from_it(tmp_path: Path) -> None:
    """A second `machines:` at the end replaces the first: the capabilities and agents it
    took away are consequences, listed after the cause."""
    text = BASE + "machines:\n  - {id: saw1, location: bay1, capabilities: {sawing: 10}}\n"
    code, report = validate_command(write_cell(tmp_path, text))
    rows = report.splitlines()
    assert code == 2 and len(rows) > 1
    assert "machines: duplicate key (first at line" in rows[0]
    assert any("no machine offers capability" in r for r in rows[1:])


def test_every_issue_is_collected_in_one_go() -> None:
    path = BAD / "many_errors.yaml"
    issues = issues_of(path)
    assert [(i.line, i.path) for i in issues] == [
        (3, "cell"),
        (7, "layout.locations[1].y"),
        (8, "layout.locations[2].id"),
        (9, "layout.input"),
        (12, "machines[0].location"),
        (13, "machines[0].capabilities.milling"),
        (14, "machines[0].power_kw"),
        (15, "machines[0].mtbf_s"),
        (16, "machines[0].scrap_rate"),
        (17, "machines[0].colour"),
        (21, "machines[1].setup_s"),
        (23, "robots[0].id"),
        (25, "robots[0].transport_s.store.bay2"),
        (28, "products[0].routing[1].capability"),
        (30, "orders[0].quantity"),
        (30, "orders[0].product"),
        (30, "orders[0].due_at"),
        (31, "orders[1].due_at"),
        (32, "negotiation.lease_s"),
        (34, "hosts[0].agents[1]"),
        (35, "hosts[1].agents[0]"),
        (36, "security.keys_dir"),
        (37, "sim.network.loss"),
    ]
    assert all(i.file == str(path) for i in issues)
    code, report = validate_command(path)
    assert code == 2
    assert report.splitlines() == [str(i) for i in issues]


# --------------------------------------------------------------------------- unreadable files


@pytest.mark.parametrize(
    ("name", "content", "want"),
    [
        ("syntax.yaml", "cell: x\nlayout:\n  locations: [\n    {id: a\n",
         ":5: invalid YAML: expected ',' or '}'"),
        ("tabs.yaml", "cell: x\nmachines:\n  - id: a\n\tlocation: b\n",
         ":4: invalid YAML: found character '\\t'"),
        ("list.yaml", "- cell: x\n", ":1: the top level must be a mapping"),
        ("empty.yaml", "# nothing yet\n", ":1: the top level must be a mapping"),
        ("scalar.yaml", "just text\n",
         ":1: the top level must be a mapping starting with `cell: <id>`, got a str"),
    ],
)
def test_unparseable_files(tmp_path: Path, name: str, content: str, want: str) -> None:
    path = write_cell(tmp_path, content, name=name, keys=False)
    code, report = validate_command(path)
    assert code == 2
    assert report.startswith(str(path) + want), report


def test_missing_file_directory_and_bad_encoding(tmp_path: Path) -> None:
    code, report = validate_command(tmp_path / "nope.yaml")
    assert code == 2 and "no such file" in report
    write_cell(tmp_path, BASE, name="inside.yaml")
    code, report = validate_command(tmp_path)
    assert code == 2 and "is a directory" in report and "inside.yaml" in report
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("cell: caf\xe9\n".encode("latin-1"))
    code, report = validate_command(latin)
    assert code == 2 and "not UTF-8" in report


def test_unsupported_extension_lists_supported_ones(tmp_path: Path) -> None:
    path = tmp_path / "cell.txt"
    path.write_text(BASE)
    with pytest.raises(ConfigError) as caught:
        load_cell_or_instance(path)
    assert ".yaml, .yml, .fjs, .jsp" in str(caught.value)


def test_yaml_merge_keys_are_not_duplicates(tmp_path: Path) -> None:
    text = BASE.replace(
        "  - id: drill1\n    location: bay2\n    capabilities: {drilling: 15.0}\n",
        "  - &d {id: drill1, location: bay2, capabilities: {drilling: 15.0}, setup_s: 1}\n"
        "  - <<: *d\n    id: drill2\n    setup_s: 2\n",
    )
    config = load_cell(write_cell(tmp_path, text))
    assert config.machine("drill2").setup_s == 2
    assert config.capable_machines("drilling") == ["drill1", "drill2"]


# --------------------------------------------------------------------------- dicts and instances


def base_dict() -> dict:
    data = yaml.safe_load(BASE)
    del data["security"]
    return data


def test_cell_from_dict_runs_the_same_cross_checks(tmp_path: Path) -> None:
    assert cell_from_dict(base_dict()).source == "<dict>"
    loaded = load_cell(write_cell(tmp_path, BASE))
    again = cell_from_dict(loaded.model_dump(), base_dir=tmp_path)  # python mode: keys_dir a Path
    assert again.keys_dir_path() == loaded.keys_dir_path()
    with pytest.raises(ConfigError, match="security.keys_dir: keys directory .* does not exist"):
        cell_from_dict(loaded.model_dump(), base_dir=tmp_path / "elsewhere")
    data = base_dict()
    data["orders"][1]["product"] = "nothing"
    data["machines"][0]["scrap_rate"] = 3
    with pytest.raises(ConfigError) as caught:
        cell_from_dict(data, source="generated")
    assert [str(i) for i in caught.value.issues] == [
        "generated: machines[0].scrap_rate: scrap_rate is a fraction from 0 to 1 (0.05 means "
        "5 %), so it must be less than or equal to 1; got 3 — for 3 % write 0.03",
        "generated: orders[1].product: unknown product 'nothing'; add the product to "
        "`products` or fix the order (known: bracket)",
    ]


def test_instances_go_through_the_same_model(tmp_path: Path, monkeypatch) -> None:
    seen: list[Path] = []

    def load_instance(path):
        seen.append(Path(path))
        return "instance"

    def instance_to_cell_dict(inst):
        assert inst == "instance"
        return base_dict()

    fake = types.ModuleType("sim_bridge.instances")
    fake.load_instance = load_instance
    fake.instance_to_cell_dict = instance_to_cell_dict
    monkeypatch.setitem(sys.modules, "sim_bridge.instances", fake)
    path = tmp_path / "ft06.fjs"
    path.write_text("6 6\n")
    config = load_cell_or_instance(path)
    assert seen == [path] and config.source == str(path)
    assert validate_command(path)[0] == 0

    def broken(path):
        raise ValueError(f"{path}:3: token 2 ('x') is not an integer")

    fake.load_instance = broken
    with pytest.raises(ConfigError) as caught:
        load_cell_or_instance(path)
    (issue,) = caught.value.issues
    assert (issue.file, issue.line, issue.message) == (
        str(path), 3, "token 2 ('x') is not an integer"
    )


# --------------------------------------------------------------------------- model helpers


def test_helpers_on_the_demo_cell() -> None:
    config = load_cell(CELLS / "demo_cell.yaml")
    assert config.capable_machines("milling") == ["mill1", "mill2"]
    assert config.capable_machines("drilling") == ["mill2", "lathe1", "drill1"]
    assert config.capable_machines("welding") == []
    assert config.machine("lathe1").capabilities["turning"] == 40.0
    routing = [op.op for op in config.product("housing").routing]
    assert routing == ["face", "bore", "thread", "inspect"]
    assert (config.location("ship").x, config.location("ship").y) == (36.0, 0.0)
    ids = config.agent_ids()
    assert ids[:7] == ["mill1", "mill2", "lathe1", "drill1", "station1", "agv1", "agv2"]
    assert len(ids) == len(set(ids)) == 5 + 2 + 24
    assert config.keys_dir_path() is None and config.host_of("mill1") == "machines"
    assert config.host_of("o-001") == "orders" and config.host_of("agv2") == "logistics"
    assert config.travel_s("agv2", "qc_bay", "turn_bay") == 25.0  # table, reverse direction
    assert config.travel_s("agv1", "store", "ship") == pytest.approx(36.0 / 1.2)
    with pytest.raises(KeyError, match="no machine 'mill9'.*known: mill1"):
        config.machine("mill9")


def test_defaults_and_derived_values(tmp_path: Path) -> None:
    config = load_cell(CELLS / "minimal_cell.yaml")
    assert (config.layout.input, config.layout.output) == ("bench", "bench")
    assert config.negotiation.lease_s == 30
    assert config.negotiation.strategy.order == "earliest_finish"
    assert config.sim.network.latency_s == 0.001 and config.sim.network.loss == 0
    assert config.escalation.repeat_faults.count == 3 and config.escalation.quality_reject
    assert config.robots == [] and [h.name for h in config.hosts] == ["main"]
    base = load_cell(write_cell(tmp_path, BASE))
    assert base.host_of("drill1") == "h2" and base.host_of("agv1") == "h1"  # unlisted: first host


def test_config_is_frozen() -> None:
    config = load_cell(CELLS / "minimal_cell.yaml")
    with pytest.raises(ValidationError):
        config.sim.seed = 2  # type: ignore[misc]
    copy = config.model_copy(update={"cell": "other"})
    assert copy.cell == "other" and copy.source == config.source


def test_issue_formatting() -> None:
    assert str(ConfigIssue("c.yaml", 4, "machines[0].id", "bad")) == "c.yaml:4: machines[0].id: bad"
    assert str(ConfigIssue("c.yaml", None, "", "gone")) == "c.yaml: gone"
    assert format_path(("machines", 2, "capabilities", "milling")) == (
        "machines[2].capabilities.milling"
    )
    assert format_path(("machines", 0, "capabilities", "J1.O2")) == (
        "machines[0].capabilities['J1.O2']"
    )
    error = ConfigError([ConfigIssue("a", 1, "x", "one"), ConfigIssue("a", 2, "y", "two")])
    assert str(error) == "a:1: x: one\na:2: y: two"


# --------------------------------------------------------------------------- JSON Schema


def test_shipped_schema_is_up_to_date(tmp_path: Path) -> None:
    assert SCHEMA_PATH == CELLS / "cell.schema.json"
    written = write_schema(tmp_path / "cell.schema.json")
    assert written.read_text(encoding="utf-8") == schema_text()
    assert SCHEMA_PATH.read_text(encoding="utf-8") == schema_text(), (
        "cell_configs/cell.schema.json is stale; regenerate it with "
        "python -c 'from ops.config import write_schema; write_schema()'"
    )


def test_schema_header_and_descriptions() -> None:
    schema = cell_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] and schema["title"] == "autocell cell configuration"
    assert schema["additionalProperties"] is False
    for name, definition in schema["$defs"].items():
        assert definition.get("additionalProperties") is False, name
        for field, spec in definition["properties"].items():
            assert spec.get("description"), f"{name}.{field} has no description"


@pytest.mark.parametrize("name", ["demo_cell.yaml", "minimal_cell.yaml"])
def test_json_schema_accepts_example_cells(name: str) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    cell = yaml.safe_load((CELLS / name).read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator(schema).validate(cell)


def test_json_schema_rejects_unknown_keys_and_ranges() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(cell_schema())
    cell = yaml.safe_load((CELLS / "minimal_cell.yaml").read_text(encoding="utf-8"))
    cell["machines"][0]["colour"] = "red"
    cell["orders"][0]["quantity"] = 0
    errors = {tuple(e.absolute_path) for e in validator.iter_errors(cell)}
    assert errors == {("machines", 0), ("orders", 0, "quantity")}


def test_json_schema_knows_both_strategy_forms() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(cell_schema())
    cell = yaml.safe_load((CELLS / "minimal_cell.yaml").read_text(encoding="utf-8"))
    cell["negotiation"] = {"strategy": {
        "order": "earliest_finish",
        "resource": {"name": "slack_bidding", "params": {"priority_weight_s": 600}}}}
    assert list(validator.iter_errors(cell)) == []
    cell["negotiation"]["strategy"]["resource"] = {"name": "slack_bidding", "parms": {}}
    assert [tuple(e.absolute_path) for e in validator.iter_errors(cell)] == [
        ("negotiation", "strategy", "resource")]


def test_dump_round_trip() -> None:
    """A dumped config loads again to the same values (defaults are resolved and stable)."""
    config = load_cell(CELLS / "demo_cell.yaml")
    dumped = config.model_dump(mode="json")
    again = cell_from_dict(dumped)
    assert again.model_dump(mode="json") == dumped
    assert CellConfig.model_validate(dumped).model_dump(mode="json") == dumped
