"""Deployment files: the systemd units start the commands this version really has."""

from __future__ import annotations

import shlex
from pathlib import Path

from ops.cli import build_parser
from ops.prometheus.config import CONSOLE_TARGET

SYSTEMD = Path(__file__).resolve().parents[1] / "ops" / "systemd"


def unit(name: str) -> dict[str, dict[str, list[str]]]:
    """Sections -> key -> values (systemd repeats keys such as Environment=)."""
    out: dict[str, dict[str, list[str]]] = {}
    section = ""
    for line in (SYSTEMD / name).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            out[section] = {}
            continue
        key, _, value = line.partition("=")
        out[section].setdefault(key, []).append(value)
    return out


def exec_argv(u: dict[str, dict[str, list[str]]], instance: str) -> list[str]:
    env = dict(v.partition("=")[::2] for v in u["Service"]["Environment"])
    env["AUTOCELL_START_AT"] = "1700000000.0"
    (cmd,) = u["Service"]["ExecStart"]
    cmd = cmd.replace("%i", instance)
    for k, v in env.items():
        cmd = cmd.replace("${" + k + "}", v)
    assert "${" not in cmd, cmd
    return shlex.split(cmd)


def test_host_and_sim_units_run_commands_the_cli_accepts() -> None:
    for name, instance, command in (("autocell-host@.service", "machines", "host"),
                                    ("autocell-sim.service", "", "sim"),
                                    ("autocell-console-agent.service", "", "console-agent")):
        u = unit(name)
        assert u["Service"]["Restart"] == ["always"] and u["Service"]["UMask"] == ["0077"]
        assert u["Install"]["WantedBy"] == ["autocell.target"]
        argv = exec_argv(u, instance)
        assert argv[0].endswith("/autocell") and argv[1] == command
        args = build_parser().parse_args(argv[1:])        # exits 2 on a flag we don't have
        assert args.log_level == "info" and args.start_at == 1700000000.0
        if command == "host":
            assert args.name == "machines"


def test_console_unit_runs_a_command_the_cli_accepts_on_the_agents_store() -> None:
    console, agent = unit("autocell-console.service"), unit("autocell-console-agent.service")
    argv = exec_argv(console, "")
    assert argv[1] == "console"
    args = build_parser().parse_args(argv[1:])            # exits 2 on a flag we don't have
    # the store the console agent writes (its --state-dir), and the users beside it
    state = exec_argv(agent, "")
    state_dir = state[state.index("--state-dir") + 1]
    assert args.db == f"{state_dir}/escalations.db" and args.users == f"{state_dir}/users.db"
    # the port `autocell ops prometheus-config` scrapes by default
    assert f"127.0.0.1:{args.metrics_port}" == CONSOLE_TARGET
    assert console["Service"]["UMask"] == ["0077"]
    assert console["Install"]["WantedBy"] == ["autocell.target"]
    assert "Install" in unit("autocell.target")
