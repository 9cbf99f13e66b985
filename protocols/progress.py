"""A progress bar for round loops (rich, loaded only when shown): ``with round_progress(...) as advance``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["round_progress"]


@contextmanager
def round_progress(enabled: bool, description: str, total: int) -> Iterator[Callable[[float], None]]:
    """Yield ``advance(accuracy)``, one call per finished round; a no-op when not ``enabled``. The bar is
    stopped on the way out, whatever ended the loop."""
    if not enabled:
        yield lambda accuracy: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    prog = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("acc {task.fields[acc]}"),
        TimeElapsedColumn(),
        transient=False,
    )
    prog.start()
    task = prog.add_task(description, total=total, acc="-")
    try:
        yield lambda accuracy: prog.update(task, advance=1, acc=f"{accuracy:.3f}")
    finally:
        prog.stop()
