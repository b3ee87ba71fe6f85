"""Validation errors in the words of the person editing the cell file.

Pydantic says what its types expect (``Input should be a valid dictionary or instance of
PowerDraw``); an automation engineer needs to know what to *write*.  The loader
(:mod:`ops.config.loader`, step 2) hands each error, with the model field it concerns, to
:func:`rewrite`; a rule here returns the message to show instead, or ``None`` to keep the
loader's generic one.  Rules are data-driven where they can be (a mapping field is explained
from its model's keys, a 0..1 field from its bounds), with a worked example only where a
generic sentence would not help (``power_kw``, ``capabilities``).

:func:`key_suggestion` finds the key a misspelt or abbreviated one most likely meant
(``qty`` -> ``quantity``), where plain :mod:`difflib` ratios are too strict for
abbreviations.
"""

from __future__ import annotations

import difflib
import re
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from security.untrusted import shown as echoed

__all__ = ["key_suggestion", "rewrite"]

#: A mapping field whose model needs an example to be understood: the example, with
#: ``{n}`` standing for a number the user wrote where the mapping belongs.
EXAMPLES: Mapping[str, tuple[str, str]] = {
    "PowerDraw": ("{{idle: {n}, busy: {n}}}", "kW while idle and while processing; setup, "
                  "standby, off, busy_by_capability and wake are optional"),
}

_PLAIN = re.compile(r"[A-Za-z0-9_.-]{1,40}")
_MAPPING_ERRORS = ("model_type", "model_attributes_type", "dict_type")
_BOUND_ERRORS = ("less_than_equal", "greater_than_equal", "less_than", "greater_than")


def rewrite(kind: str, value: Any, key: str, field: FieldInfo | None,
            message: str = "") -> str | None:
    """The message for a pydantic error of type ``kind`` (its text ``message``) on ``key``
    (given ``value``), or None to keep the generic one."""
    if field is None:
        return None
    if kind in _MAPPING_ERRORS and not isinstance(value, dict):
        return _not_a_mapping(value, key, field)
    if kind in _BOUND_ERRORS and _is_fraction(field):
        return _fraction(value, key, message)
    if kind in ("float_parsing", "int_parsing") and isinstance(value, str):
        return _with_unit(value, key, kind)
    return None


#: A number written with a time unit: ``15min``, ``20 s``, ``1.5h``.
_TIMED = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?)\s*(ms|s|sec|secs|min|mins|h|hr|hrs)\s*$",
                    re.IGNORECASE)
_UNIT_S = {"ms": 0.001, "s": 1, "sec": 1, "secs": 1, "min": 60, "mins": 60, "h": 3600,
           "hr": 3600, "hrs": 3600}


def _with_unit(value: str, key: str, kind: str) -> str | None:
    """A time written with its unit (``15min`` for ``due_at``): the plain number of
    seconds to write; None for other text (the generic message)."""
    whole = "a whole number" if kind == "int_parsing" else "a number"
    timed = _TIMED.match(value)
    if timed is None or not (key.endswith("_s") or key.endswith("_at")):
        return None
    seconds = float(timed[1]) * _UNIT_S[timed[2].lower()]
    return (f"{key} is {whole} of seconds, without a unit: write `{key}: {seconds:g}` "
            f"(got {echoed(value)})")


def _not_a_mapping(value: Any, key: str, field: FieldInfo) -> str | None:
    core = _core(field.annotation)
    got = _got(value)
    if key == "capabilities" and isinstance(value, (list, str)):
        names = [str(v) for v in (value if isinstance(value, list) else [value])
                 if isinstance(v, str) and _PLAIN.fullmatch(v)][:4] or ["milling"]
        example = ", ".join(f"{n}: 30.0" for n in names)
        return (f"capabilities map each capability to its processing time — capability → "
                f"seconds per unit — e.g. `capabilities: {{{example}}}`; {got}")
    if isinstance(core, type) and issubclass(core, BaseModel):
        number = value if isinstance(value, (int, float)) and not isinstance(value, bool) else 1.0
        if core.__name__ in EXAMPLES:
            template, meaning = EXAMPLES[core.__name__]
            example = template.format(n=f"{number:g}")
            return (f"{key} is a mapping, not a single value: write `{key}: {example}` "
                    f"({meaning}); {got}")
        keys = [f.alias or name for name, f in core.model_fields.items()]
        return (f"{key} is a mapping with the keys {', '.join(keys)}"
                f" (`{key}: {{{keys[0]}: ...}}`); {got}")
    if typing.get_origin(core) is dict:
        what = f" ({field.description.rstrip('.')})" if field.description else ""
        return f"{key} is a mapping `name: value`{what}; {got}"
    return None


def _is_fraction(field: FieldInfo) -> bool:
    """A field bounded to 0..1: a probability or a share, never a percentage."""
    ge = le = None
    for m in field.metadata:
        ge = getattr(m, "ge", ge)
        le = getattr(m, "le", le)
    return ge == 0 and le == 1


def _fraction(value: Any, key: str, message: str) -> str:
    bound = message.removeprefix("Input should be ") or "between 0 and 1"
    msg = f"{key} is a fraction from 0 to 1 (0.05 means 5 %), so it must be {bound}; " \
          f"{_got(value)}"
    if isinstance(value, (int, float)) and 1 < value <= 100:
        msg += f" — for {value:g} % write {value / 100:g}"
    return msg


def _got(value: Any) -> str:
    if isinstance(value, list):
        return f"got a list ({', '.join(echoed(v) for v in value[:4])}" + (
            ", ...)" if len(value) > 4 else ")")
    return f"got {echoed(value)}"


def _core(annotation: Any) -> Any:
    """``X | None`` and ``Annotated[X, ...]`` down to X."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
            continue
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if origin is not None and origin is not dict and origin is not list and len(args) == 1:
            annotation = args[0]
            continue
        return annotation


def key_suggestion(key: str, allowed: Sequence[str]) -> str | None:
    """The allowed key ``key`` most likely meant: a close spelling (difflib), else the
    shortest key it abbreviates (``qty`` -> ``quantity``: same first letter, its letters in
    order), else the only key it is a prefix of."""
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    if close:
        return close[0]
    low = key.lower().replace("_", "")
    if len(low) < 2:
        return None

    def abbreviates(word: str) -> bool:
        rest = iter(word.lower())
        return word[:1].lower() == low[0] and all(ch in rest for ch in low)

    found = sorted((w for w in allowed if abbreviates(w)), key=len)
    return found[0] if found else None
