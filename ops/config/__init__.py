"""Cell configuration: the YAML file an automation engineer writes, as validated models.

Entry points: :func:`load_cell` (a YAML file), :func:`load_cell_or_instance`
(YAML or a job-shop benchmark instance), :func:`cell_from_dict` (data built
by a program) and :func:`validate_command` (``autocell validate``).  All
raise :class:`ConfigError` carrying every :class:`ConfigIssue` at once.
Fault-scenario files: :mod:`ops.config.fault_files`.

The models themselves live below the agents and drivers that read them
(:mod:`agents.cell.model`, :mod:`agents.cell.faults`); this package keeps
what needs the YAML or the whole cell — line numbers, cross-checks, the
JSON Schema — and hands the model names on for the command line.
"""

from agents.cell.model import (
    CellConfig,
    CountWindow,
    Escalation,
    HostSpec,
    Layout,
    Location,
    Machine,
    NegotiationSettings,
    Network,
    Order,
    PowerDraw,
    Product,
    Robot,
    RoutingStep,
    Security,
    Sim,
    Strategy,
)
from ops.config.loader import (
    ConfigError,
    ConfigIssue,
    cell_from_dict,
    format_path,
    load_cell,
    load_cell_or_instance,
    validate_command,
)
from ops.config.schema import cell_schema, write_schema

__all__ = [
    "CellConfig",
    "ConfigError",
    "ConfigIssue",
    "CountWindow",
    "Escalation",
    "HostSpec",
    "Layout",
    "Location",
    "Machine",
    "NegotiationSettings",
    "Network",
    "Order",
    "PowerDraw",
    "Product",
    "Robot",
    "RoutingStep",
    "Security",
    "Sim",
    "Strategy",
    "cell_from_dict",
    "cell_schema",
    "format_path",
    "load_cell",
    "load_cell_or_instance",
    "validate_command",
    "write_schema",
]
