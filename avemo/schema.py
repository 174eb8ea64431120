"""One error form for every pydantic-validated input: ``key: reason, got value``.

Run configs (``fusion.config``), stage-one feature-set parameters (``extract.base``) and
``AVEMO_*`` settings (``avemo.settings``) are all pydantic models; this module turns a
``ValidationError`` into the one line the user sees, with "did you mean" for an unknown key,
so that a mistake reads the same whichever file or variable it came from.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from avemo.errors import did_you_mean

#: Location parts pydantic adds for validators, not keys the user wrote.
_NOT_KEYS = frozenset({"function-after", "function-before", "function-wrap", "function-plain"})


def known_keys(
    model: type[BaseModel], loc: Sequence[Any] = (), by_alias: bool = False
) -> list[str]:
    """Keys of the (nested) model section at ``loc``: the candidates for "did you mean"."""
    current: Any = model
    for part in loc:
        fields = getattr(current, "model_fields", {})
        f = fields.get(part) or next(
            (x for x in fields.values() if by_alias and x.alias == part), None
        )
        if f is None:
            return []
        ann = f.annotation
        args = [a for a in getattr(ann, "__args__", ()) if isinstance(a, type)]
        nxt = (
            ann
            if isinstance(ann, type)
            else next((a for a in args if issubclass(a, BaseModel)), None)
        )
        if nxt is None or not issubclass(nxt, BaseModel):
            return []
        current = nxt
    fields = getattr(current, "model_fields", {})
    return [(f.alias or n) if by_alias else n for n, f in fields.items()]


def describe(
    err: Mapping[str, Any],
    known: Callable[[tuple[Any, ...]], list[str]],
    prefix: str = "",
) -> str:
    """One pydantic error as ``key: reason, got value`` (``known(loc)``: the keys beside it)."""
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p in _NOT_KEYS))
    key = prefix + ".".join(str(p) for p in loc)
    if err["type"] == "extra_forbidden":
        keys = known(loc[:-1])
        hint = did_you_mean(str(loc[-1]), keys)
        return f"{key}: unknown key{hint}" + (
            f" (known: {', '.join(keys)})" if keys and not hint else ""
        )
    if err["type"] == "missing":
        return f"{key} is required"
    msg = err["msg"][0].lower() + err["msg"][1:]
    msg = msg.removeprefix("value error, ")  # a validator's own ValueError text
    return f"{key}: {msg}, got {err.get('input')!r}"


def format_errors(
    e: ValidationError,
    model: type[BaseModel],
    prefix: str = "",
    by_alias: bool = False,
    limit: int = 5,
) -> str:
    """Every error of ``e`` (the first ``limit``) on one line, ``; ``-separated."""
    errs = e.errors(include_url=False)
    lines = [describe(x, lambda loc: known_keys(model, loc, by_alias), prefix) for x in errs]
    more = len(lines) - limit
    return "; ".join(lines[:limit]) + (f" (and {more} more)" if more > 0 else "")


__all__ = ["describe", "format_errors", "known_keys"]
