"""``autocell ops prometheus-config CELL``: a scrape configuration for a cell's processes.

One job per cell; one static target per process that has a ``metrics_port``
in the cell file (the simulator, then the hosts in file order), labelled
with ``cell`` and ``process``.  A target's address is the host part of the
process's ZeroMQ endpoint — the address its metrics bind to — so a cell
spread over several PCs is scraped where each process runs.  The output
is deterministic: the sample in ``ops/prometheus/`` is this command's
output for the demo cell, and a test keeps it current.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import yaml

from ops.metrics import metrics_addr
from security.errors import ConfigurationError

DURATION = re.compile(r"^[0-9]+(ms|s|m|h)$")


def targets(cfg: Any) -> list[tuple[str, str]]:
    """``(process, "address:port")`` of every process with a metrics port."""
    out = []
    if cfg.sim.metrics_port is not None:
        out.append(("sim", f"{_addr(cfg.sim.endpoint)}:{cfg.sim.metrics_port}"))
    for h in cfg.hosts:
        if h.metrics_port is not None:
            out.append((h.name, f"{_addr(h.endpoint)}:{h.metrics_port}"))
    return out


def _addr(endpoint: str) -> str:
    addr = metrics_addr(endpoint)
    if addr == "0.0.0.0":
        return "127.0.0.1"      # bound on every interface: scrape it where Prometheus runs
    return f"[{addr}]" if ":" in addr else addr


CONSOLE_TARGET = "127.0.0.1:8601"
"""Where ``autocell console --metrics-port 8601`` serves the console's /metrics."""
TARGET = re.compile(r"^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):[0-9]{1,5}$")


def scrape_config(cfg: Any, *, scrape_interval: str = "15s", source: str = "",
                  console: str | None = CONSOLE_TARGET, rules: Sequence[str] = ()) -> str:
    """The prometheus.yml text for the cell: its processes, the web console (``console``,
    HOST:PORT of its metrics, or None) as the job ``autocell-CELL-console``, and the alert
    ``rules`` files to load."""
    if not DURATION.match(scrape_interval):
        raise ConfigurationError(f"--scrape-interval {scrape_interval!r}: use a Prometheus "
                                 "duration such as 15s, 500ms or 1m")
    found = targets(cfg)
    if not found:
        raise ConfigurationError(f"{source or cfg.cell}: no process has a metrics_port; add "
                                 "`metrics_port` to the hosts and to `sim` in the cell file")
    if console is not None and not TARGET.match(console):
        raise ConfigurationError(f"--console {console!r}: use HOST:PORT of the console's "
                                 "metrics (autocell console --metrics-port), or none")
    timeout = scrape_interval if _seconds(scrape_interval) < 10 else "10s"
    doc: dict[str, Any] = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        **({"rule_files": list(rules)} if rules else {}),
        "scrape_configs": [{
            "job_name": f"autocell-{cfg.cell}",
            "scrape_interval": scrape_interval,
            "scrape_timeout": timeout,
            "static_configs": [{"targets": [target], "labels": {"cell": cfg.cell,
                                                               "process": process}}
                               for process, target in found],
        }],
    }
    if console is not None:     # escalations (autocell_escalations_open) for the alerts
        doc["scrape_configs"].append({
            "job_name": f"autocell-{cfg.cell}-console",
            "scrape_interval": scrape_interval,
            "scrape_timeout": timeout,
            "static_configs": [{"targets": [console],
                                "labels": {"cell": cfg.cell, "process": "console"}}],
        })
    missing = [h.name for h in cfg.hosts if h.metrics_port is None]
    if cfg.sim.metrics_port is None:
        missing.insert(0, "sim")
    head = [f"# Prometheus scrape configuration for the autocell cell {cfg.cell!r}.",
            "# Written by `autocell ops prometheus-config`; see docs/operations.md."]
    if missing:
        head.append(f"# Without a metrics_port (not scraped): {', '.join(missing)}.")
    return "\n".join(head) + "\n" + yaml.safe_dump(doc, sort_keys=False)


def _seconds(duration: str) -> float:
    n = float(re.sub(r"[a-z]+$", "", duration))
    return n * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[re.sub(r"^[0-9]+", "", duration)]
