"""Terminal output shared by the commands: tables that fit the terminal, plain help text."""

from __future__ import annotations

import argparse
import importlib
import re
from collections.abc import Sequence
from typing import Any

__all__ = ["cell", "names_help", "plain", "print_table"]

_ROLE = re.compile(r":[a-z]+:`~?([^`<]*?)(?:\s*<[^>]*>)?`")


def plain(text: str | None) -> str | None:
    """Docstring text for ``--help``: Sphinx roles and literal markup removed (``x`` -> x)."""
    if text is None:
        return None
    text = _ROLE.sub(r"\1", text).replace("``", "")
    return re.sub(r"::$", ":", text, flags=re.M)


def names_help(
    template: str, names: str, base: type[argparse.Action] = argparse._StoreAction
) -> type[argparse.Action]:
    """A ``base`` action whose help lists the names ``module:attr.path()`` returns.

    The module is imported only when help is shown (some registries import torch).
    """

    class _Names(base):  # type: ignore[valid-type,misc]
        @property
        def help(self) -> str:
            module, path = names.split(":")
            obj: Any = importlib.import_module(module)
            for attr in path.split("."):
                obj = getattr(obj, attr)
            found: Sequence[str] = obj()
            return template.format(names=", ".join(found))

        @help.setter
        def help(self, value: str | None) -> None:
            pass

    return _Names


def cell(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def print_table(console: Any, caption: str, header: Sequence[Any], rows: Sequence[Sequence[Any]]) -> None:
    """A table when it fits ``console.width`` untruncated, else one record per row (nothing cut)."""
    from rich.table import Table

    t = Table()
    for h in header:
        t.add_column(str(h), overflow="fold")
    for r in rows:
        t.add_row(*[cell(c) for c in r])
    if caption:
        console.print(caption, style="bold", markup=False, highlight=False)
    if console.measure(t, options=console.options.update_width(10_000)).maximum <= console.width:
        console.print(t)
        return
    lead = min(2, len(header))
    for r in rows:
        cells = [cell(c) for c in r]
        console.print(" / ".join(cells[:lead]), markup=False, highlight=False)
        for h, c in zip(header[lead:], cells[lead:]):
            console.print(f"    {h}: {c}", markup=False, highlight=False)
