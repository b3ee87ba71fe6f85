"""JSON Schema of the cell file, for editors and for tools outside Python.

The schema is generated from the pydantic models, never written by hand, so
it cannot drift from what :func:`ops.config.load_cell` accepts; a test
regenerates it and compares with the shipped ``cell_configs/cell.schema.json``.
It covers field types, ranges and unknown keys; the cross-references between
sections (does a location exist, does a machine offer a capability) are only
checked by the loader.  Regenerate after changing a model::

    python -c "from ops.config import write_schema; write_schema()"
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agents.cell.model import CellConfig

__all__ = ["SCHEMA_ID", "SCHEMA_PATH", "cell_schema", "schema_text", "write_schema"]

SCHEMA_ID = "urn:autocell:cell-config:v1"
#: Where the repository ships the schema, next to the example cells.
SCHEMA_PATH = Path(__file__).resolve().parents[2] / "cell_configs" / "cell.schema.json"


def cell_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a cell file."""
    body = CellConfig.model_json_schema(mode="validation")
    body.pop("title", None)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "autocell cell configuration",
        **body,
    }


def schema_text() -> str:
    """The schema exactly as written to disk: stable key order, two-space indent, final newline."""
    return json.dumps(cell_schema(), indent=2, ensure_ascii=False) + "\n"


def write_schema(path: str | Path = SCHEMA_PATH) -> Path:
    """Write the schema to ``path`` and return the path."""
    target = Path(path)
    target.write_text(schema_text(), encoding="utf-8")
    return target
