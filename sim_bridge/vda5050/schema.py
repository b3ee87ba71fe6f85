"""Every VDA 5050 message, sent or received, checked against the official JSON schemas.

The schemas are those of VDA 5050 **2.0.0** (``schemas/README.md`` says
where they come from).  :func:`problems` returns what is wrong with a
message for a topic, as short texts naming the place (``nodes[0].nodeId:
'x' is not of type 'string'``); an empty list means valid.  The gateway
drops an invalid message from a vehicle, counts it, and logs it once per
vehicle and topic; a message autocell builds that fails its schema is a
bug (:class:`~security.errors.ProtocolBug`), never sent.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator

__all__ = ["TOPICS", "VERSION", "problems"]

VERSION = "2.0.0"
#: Topics whose schema ships here (the VDA 5050 2.0.0 set).
TOPICS: tuple[str, ...] = ("connection", "factsheet", "instantActions", "order", "state",
                           "visualization")
MAX_PROBLEMS = 5


@cache
def _validator(topic: str) -> Draft202012Validator:
    if topic not in TOPICS:
        raise KeyError(f"no VDA 5050 schema for topic {topic!r}")
    text = resources.files(__package__).joinpath("schemas", f"{topic}.schema.json").read_text()
    schema = json.loads(text)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def problems(topic: str, message: Any) -> list[str]:
    """What makes ``message`` invalid for ``topic`` (at most :data:`MAX_PROBLEMS`)."""
    out = []
    for error in _validator(topic).iter_errors(message):
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.path)
        out.append(f"{where.lstrip('.') or '(message)'}: {error.message[:200]}")
        if len(out) >= MAX_PROBLEMS:
            break
    return out
