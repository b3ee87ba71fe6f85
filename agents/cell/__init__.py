"""The cell model: what a cell is, as validated values, and how the core is built from it.

A cell file (machines, robots, products, orders, negotiation and escalation
settings) and a fault scenario are read by the agents, every driver, the
simulator and the reports, so their pydantic models live here, below all of
them: :mod:`.model` (the cell) and :mod:`.faults` (fault scenarios).  Next to
them are the translators from a config to the plain values the core runs on:
:mod:`.build` (agents, timing, roles, escalation policy) and :mod:`.specs`
(the plant's machines, the KPI specs).

Reading YAML with line numbers, the checks that need the whole cell and the
JSON Schema export stay with the command line, in :mod:`ops.config`; build a
config with :func:`ops.config.load_cell` or :func:`ops.config.cell_from_dict`
so that the cross-references are checked.  This package imports nothing
above ``agents``.
"""
