"""What a subject, a split and a fold are for each adapter, declared by the adapter itself.

The docs' adapter table (docs/adapters.md) is rendered from these declarations at build time
(docs/hooks.py), so a new adapter is one file and the table cannot drift from the code.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

from avemo.data.adapters import DATASETS, load_all


@dataclass(frozen=True)
class EvalProtocol:
    """An adapter's answers to the three questions stage two's splits depend on."""

    subject: str  # whose clips must never be split across partitions
    split: str  # where the manifest's train / val / test names come from
    fold: str  # what one value of the `fold` column holds ("none: ..." where there is none)


def options(name: str) -> list[str]:
    """The adapter's ``--option`` keys: its named constructor arguments."""
    params = inspect.signature(DATASETS.get(name)).parameters.values()
    return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def protocol_of(name: str) -> EvalProtocol:
    """The registered adapter's declared protocol; an adapter without one is a plugin bug."""
    proto = getattr(DATASETS.get(name), "protocol", None)
    if not isinstance(proto, EvalProtocol):
        raise TypeError(
            f"dataset adapter {name!r} declares no `protocol = EvalProtocol(subject=..., "
            "split=..., fold=...)` (what a subject, a split and a fold are)"
        )
    return proto


def protocol_table() -> str:
    """A Markdown table, one row per registered adapter (built-ins and loaded plugins)."""
    load_all()
    out = [
        "| adapter | subject | split | fold (what one fold is) | options |",
        "|---|---|---|---|---|",
    ]
    for name in DATASETS.names():
        p = protocol_of(name)
        opts = ", ".join(f"`{o}`" for o in options(name))
        out.append(f"| `{name}` | {p.subject} | {p.split} | {p.fold} | {opts} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":  # the installed module's classes, not this ``__main__`` copy's
    from avemo.data.adapters.protocol import protocol_table as table

    print(table(), end="")
