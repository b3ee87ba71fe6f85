"""``autocell equipment``: commissioning real machines (docs/equipment.md).

* ``equipment browse opc.tcp://HOST:PORT`` lists the machines a server offers
  (Machinery ``Machines`` folder), their type and the profiles they support,
  and prints a cell-file snippet for each.
* ``equipment check CELL`` opens a session to every ``backend: opcua`` machine
  as the gateway would and reports, one line per machine, reachability, the
  security in use and whether every node and method of its profile and its
  readings exist; for every ``backend: vda5050`` robot, whether the broker is
  reachable, the vehicle ONLINE, its factsheet offers pick and drop, and it
  is on the cell's map; exit 1 on any problem.
* ``equipment trust opc.tcp://HOST:PORT`` shows the server's certificate
  thumbprint and puts it on the gateway's trust list (``--yes``, or answer y).

The gateway's OPC UA certificate and trust list live in ``KEYS/opcua``: the
keys directory of ``--keys-dir``, else of the cell (``security.keys_dir``,
else ``STATE_DIR/keys`` as ``autocell up`` uses it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from security.errors import ConfigurationError

EXIT_PROBLEM = 1


def _keys_dir(args: argparse.Namespace) -> Path:
    if args.keys_dir:
        return Path(args.keys_dir)
    cell = getattr(args, "cell", None)
    if cell:
        from ops.config import load_cell

        cfg = load_cell(cell)
        given = cfg.keys_dir_path()
        if given is not None:
            return given
        return Path(args.state_dir or Path(".autocell") / cfg.cell) / "keys"
    raise ConfigurationError("say where the gateway's OPC UA certificate and trust list are: "
                             "--keys-dir DIR, or --cell CELL (its keys directory)")


def _settings(args: argparse.Namespace) -> Any:
    from agents.cell.equipment import OpcUaEquipment, OpcUaSecurity

    return OpcUaEquipment(endpoint=args.url, insecure=getattr(args, "insecure", False),
                          user=getattr(args, "user", None),
                          security=OpcUaSecurity(policy=args.policy, mode=args.mode))


def _credentials(args: argparse.Namespace, keys: Path) -> Any:
    if not args.user:
        return None
    from sim_bridge.opcua.pki import load_secrets

    secrets = load_secrets(Path(args.secrets) if args.secrets else keys / "opcua-secrets.yaml")
    if args.user not in secrets:
        raise ConfigurationError(f"user {args.user!r} is not in the OPC UA secrets file")
    return secrets[args.user]


def cmd_browse(args: argparse.Namespace) -> int:
    from sim_bridge.opcua.commission import browse
    from sim_bridge.opcua.pki import OpcUaPki
    from sim_bridge.opcua.session import SessionParams

    keys = _keys_dir(args)
    params = SessionParams(args.url, _settings(args), OpcUaPki(keys / "opcua"),
                           _credentials(args, keys))
    found = asyncio.run(browse(params))
    if args.json:
        print(json.dumps([{"machine": m.name, "type": m.type_name, "profiles": list(m.profiles),
                           "readings": m.readings, "path": m.path or m.name, "nodes": m.nodes}
                          for m in found], indent=2))
        return 0
    if not found:
        print(f"{args.url}: no machines found")
        return EXIT_PROBLEM
    for m in found:
        profiles = ", ".join(m.profiles) or "none supported yet"
        print(f"# {m.name}: {m.type_name}; profiles: {profiles}"
              + (" (a suggested mapping: check each node against the machine's documentation)"
                 if m.nodes else ""))
    print("\n# cell-file snippet (fill in location and capabilities):\nmachines:")
    for m in found:
        opcua: dict[str, Any] = {"endpoint": args.url}
        if m.profiles:
            opcua["profile"] = m.profiles[0]
        if m.path and m.path != m.name:
            opcua["machine"] = m.path
        if m.nodes:
            opcua["nodes"] = dict(m.nodes)
        if args.insecure:
            opcua["insecure"] = True
        if args.user:
            opcua["user"] = args.user
        if m.readings:
            opcua["readings"] = dict(sorted(m.readings.items()))
        entry = {"id": m.name, "location": "FILL_IN", "capabilities": {"FILL_IN": 60.0},
                 "backend": "opcua", "opcua": opcua}
        print(_indent(yaml.safe_dump([entry], sort_keys=False), 2), end="")
    return 0


def _indent(text: str, n: int) -> str:
    return "".join(" " * n + line if line.strip() else line
                   for line in text.splitlines(keepends=True))


def cmd_check(args: argparse.Namespace) -> int:
    from ops.config import load_cell
    from sim_bridge.opcua.commission import check_machine
    from sim_bridge.opcua.pki import OpcUaPki, load_secrets

    cfg = load_cell(args.cell)
    keys = _keys_dir(args)
    machines = [(m.id, m.opcua) for m in cfg.machines if m.opcua is not None]
    vehicles = [(r.id, r.vda5050) for r in cfg.robots if r.vda5050 is not None]
    if not machines and not vehicles:
        print(f"{args.cell}: no machine has `backend: opcua` and no robot `backend: vda5050`; "
              "nothing to check")
        return 0
    secrets: dict[str, Any] = {}
    if any(s.user for _, s in machines) or any(v.user for _, v in vehicles):
        given = cfg.security.opcua_secrets
        path = (Path(cfg.source).parent / given) if given else keys / "opcua-secrets.yaml"
        secrets = dict(load_secrets(path))
    pki = OpcUaPki(keys / "opcua")

    async def check_all() -> list[Any]:
        out = []
        for machine, settings in machines:
            creds = secrets.get(settings.user) if settings.user else None
            if settings.user and creds is None:
                from sim_bridge.opcua.commission import CheckLine
                out.append(CheckLine(machine, settings.endpoint, "-", False,
                                     (f"user {settings.user!r} is not in the secrets file",)))
                continue
            out.append(await check_machine(machine, settings, pki, creds))
        from sim_bridge.vda5050.commission import check_vehicle
        base = Path(cfg.source).parent
        for robot, vehicle in vehicles:
            creds = secrets.get(vehicle.user) if vehicle.user else None
            out.append(await check_vehicle(robot, vehicle, creds, base,
                                           cfg.layout.map or "cell"))
        return out

    lines = asyncio.run(check_all())
    if args.json:
        print(json.dumps([{"machine": c.machine, "endpoint": c.endpoint, "security": c.security,
                           "ok": c.ok, "problems": list(c.problems)} for c in lines], indent=2))
    else:
        width = max(len(c.machine) for c in lines)
        for c in lines:
            verdict = "ok" if c.ok else "PROBLEM: " + "; ".join(c.problems)
            print(f"{c.machine:<{width}}  {c.endpoint}  {c.security}  {verdict}")
    return 0 if all(c.ok for c in lines) else EXIT_PROBLEM


def cmd_trust(args: argparse.Namespace) -> int:
    from sim_bridge.opcua.commission import certificate_summary, fetch_certificate
    from sim_bridge.opcua.pki import OpcUaPki

    keys = _keys_dir(args)
    der, _thumb = asyncio.run(fetch_certificate(args.url, _settings(args)))
    info = certificate_summary(der)
    print(f"{args.url} presents:\n  subject         {info['subject']}\n"
          f"  application URI {info['application_uri']}\n  valid until     {info['not_after']}\n"
          f"  SHA-256         {info['thumbprint']}")
    if not args.yes:
        if not sys.stdin.isatty():
            print("compare the thumbprint with the one the machine shows, then run again "
                  "with --yes", file=sys.stderr)
            return EXIT_PROBLEM
        if input("trust this server? [y/N] ").strip().lower() not in ("y", "yes"):
            print("not trusted")
            return EXIT_PROBLEM
    path = OpcUaPki(keys / "opcua").trust(der)
    print(f"trusted: {path}")
    return 0


def add_parsers(sub: Any) -> None:
    """``equipment browse | check | trust`` (called by :mod:`ops.cli`)."""
    eq = sub.add_parser("equipment", help="commission real machines: browse an OPC UA server, "
                                          "check a cell's machines, trust a server")
    esub = eq.add_subparsers(dest="what", required=True, metavar="ACTION")

    def keys(sp: argparse.ArgumentParser, cell: bool) -> None:
        sp.add_argument("--keys-dir", metavar="DIR",
                        help="keys directory holding opcua/ (the gateway's certificate and "
                             "trust list)")
        if cell:
            sp.add_argument("--cell", metavar="CELL", help="use this cell's keys directory")
        sp.add_argument("--state-dir", metavar="DIR",
                        help="with a cell without security.keys_dir: its state directory "
                             "(default .autocell/CELL), whose keys/ `up` uses")

    def link(sp: argparse.ArgumentParser, *, insecure: bool) -> None:
        sp.add_argument("url", help="the server's endpoint, opc.tcp://HOST:PORT")
        if insecure:            # `trust` has no use for it: policy None exchanges no certificate
            sp.add_argument("--insecure", action="store_true",
                            help="security policy None (a test bench only)")
        sp.add_argument("--policy", default="Basic256Sha256",
                        choices=["Basic256Sha256", "Aes128_Sha256_RsaOaep",
                                 "Aes256_Sha256_RsaPss"], help="default Basic256Sha256")
        sp.add_argument("--mode", default="SignAndEncrypt", choices=["SignAndEncrypt", "Sign"],
                        help="default SignAndEncrypt")

    sp = esub.add_parser("browse", help="list the machines of an OPC UA server and print a "
                                        "cell-file snippet")
    link(sp, insecure=True)
    keys(sp, cell=True)
    sp.add_argument("--user", help="entry of the secrets file to log in as (default anonymous)")
    sp.add_argument("--secrets", metavar="FILE",
                    help="OPC UA secrets file (default KEYS/opcua-secrets.yaml)")
    sp.add_argument("--json", action="store_true", help="JSON output")
    sp.set_defaults(func=cmd_browse)

    sp = esub.add_parser("check", help="connect to every OPC UA machine of a cell; one line "
                                       "each; exit 1 on any problem")
    sp.add_argument("cell", help="cell YAML")
    keys(sp, cell=False)
    sp.add_argument("--json", action="store_true", help="JSON output")
    sp.set_defaults(func=cmd_check)

    sp = esub.add_parser("trust", help="show an OPC UA server's certificate and trust it")
    link(sp, insecure=False)
    keys(sp, cell=True)
    sp.add_argument("--yes", action="store_true", help="trust without asking")
    sp.set_defaults(func=cmd_trust)
