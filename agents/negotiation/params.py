"""Strategy parameters: the constructor's signature is the declaration.

A cell or a sweep names a strategy either bare (``slack_bidding``) or with
parameters (``{name: slack_bidding, params: {priority_weight_s: 600}}``).
The parameters are the keyword arguments of the strategy's ``__init__``, and
its type hints are their types::

    class SlackBidding(ResourceStrategy):
        def __init__(self, *, work_weight: Annotated[float, Field(ge=0)] = 1.0) -> None:

Why the signature and not a separate params class: the constructor has to
exist anyway, so declaring the parameters there is the one place that cannot
drift from what the strategy actually accepts, and a plug-in author writes
plain Python.  Pydantic turns the signature into a model (:func:`params_model`)
that checks names (unknown ones are errors, with "did you mean"), types and
ranges (``Annotated[..., Field(ge=0)]``) before any agent is built.  A
parameter without a default is required; a ``**kwargs`` constructor accepts
any name; positional-only and ``*args`` parameters cannot be configured; a
hint that cannot be resolved at run time counts as ``Any``.

A bare name, or empty ``params``, constructs ``cls()`` exactly as before
parameters existed, so existing cells build the same strategy objects.
"""

from __future__ import annotations

import difflib
import inspect
import types
import typing
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from security.untrusted import shown as echoed

__all__ = ["Problems", "check_params", "params_model"]

#: ``(path below the params mapping, message)`` for each problem found.
Problems = list[tuple[tuple[Any, ...], str]]

_MODELS: dict[type, type[BaseModel]] = {}


def params_model(cls: type) -> type[BaseModel]:
    """The keyword parameters of ``cls.__init__`` as a frozen pydantic model (cached per class)."""
    model = _MODELS.get(cls)
    if model is None:
        model = _MODELS[cls] = _build_model(cls)
    return model


def _build_model(cls: type) -> type[BaseModel]:
    fields: dict[str, Any] = {}
    extra = "forbid"
    init = cls.__init__  # type: ignore[misc]
    if init is not object.__init__:
        hints = _hints(init)
        for position, (name, p) in enumerate(inspect.signature(init).parameters.items()):
            if position == 0 or p.kind in (p.POSITIONAL_ONLY, p.VAR_POSITIONAL):
                continue   # self, and what a mapping of names cannot reach
            if p.kind is p.VAR_KEYWORD:
                extra = "allow"
                continue
            default = ... if p.default is p.empty else p.default
            fields[name] = (hints.get(name, Any), default)
    config = ConfigDict(extra=extra, frozen=True, allow_inf_nan=False,  # type: ignore[typeddict-item]
                        arbitrary_types_allowed=True)
    return create_model(f"{cls.__name__}Params", __config__=config, **fields)


def _hints(init: Any) -> dict[str, Any]:
    """The resolved type hints; one that cannot be resolved (imported only under
    TYPE_CHECKING, say) counts as ``Any``, so its value goes through unchecked."""
    try:
        return typing.get_type_hints(init, include_extras=True)
    except Exception:   # noqa: BLE001 - resolve them one by one below
        pass
    hints: dict[str, Any] = {}
    for name, annotation in getattr(init, "__annotations__", {}).items():
        holder = types.SimpleNamespace(__annotations__={name: annotation})
        try:
            hints[name] = typing.get_type_hints(holder, globalns=getattr(init, "__globals__", None),
                                                include_extras=True)[name]
        except Exception:   # noqa: BLE001
            hints[name] = Any
    return hints


def check_params(cls: type, shown: str, params: Mapping[str, Any]) -> tuple[dict[str, Any], Problems]:
    """Validate ``params`` for strategy ``cls`` (named ``shown`` in messages).

    Returns the keyword arguments to construct it with — only the names given,
    validated and converted, so the constructor's own defaults apply to the
    rest — and the problems; the arguments are only usable when there are none.
    """
    model = params_model(cls)
    names = list(model.model_fields)
    if not params:
        params = {}
    if not names and model.model_config.get("extra") == "forbid" and params:
        given = ", ".join(repr(str(k)) for k in params)
        return {}, [((), f"strategy {shown!r} takes no parameters (got {given}); "
                         "name it bare, without params")]
    try:
        validated = model.model_validate(dict(params))
    except ValidationError as exc:
        return {}, [_problem(error, shown, names) for error in exc.errors(include_url=False)]
    kwargs = {name: getattr(validated, name) for name in validated.model_fields_set
              if name in model.model_fields}
    kwargs.update(validated.model_extra or {})
    return kwargs, []


def _problem(error: Mapping[str, Any], shown: str, names: list[str]) -> tuple[tuple[Any, ...], str]:
    loc = tuple(error["loc"])
    key = str(loc[0]) if loc else "?"
    kind = error["type"]
    if kind == "extra_forbidden":
        close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
        hint = f" (did you mean {echoed(close[0])}?)" if close else ""
        return loc, (f"unknown parameter {echoed(key)} of strategy {echoed(shown)}{hint}; "
                     f"its parameters: {', '.join(names)}")
    if kind == "missing":
        return loc, f"strategy {shown!r} needs parameter {key!r}"
    message = str(error["msg"]).removeprefix("Value error, ")
    value = error.get("input")
    if not isinstance(value, (dict, list)):
        shown_value = repr(value)
        message += f" (got {shown_value if len(shown_value) <= 60 else shown_value[:57] + '...'})"
    return loc, message
