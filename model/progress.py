"""Progress a user can see during a slow step: tqdm's bar on a terminal; on a log (stderr not a terminal) a line when
the step begins and one when it ends, where a bar would be silent (tqdm turns itself off) or a flood of redraws."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator

from tqdm.auto import tqdm


def progress(items: Iterable, desc: str, *, enabled: bool = True, unit: str = "weight") -> Iterable:
    """items, reported as they are consumed (enabled: whether the caller wants a report at all)."""
    if not enabled:
        return items
    if sys.stderr.isatty():
        return tqdm(items, desc=desc, unit=unit)
    return _logged(list(items), desc, unit)


def _logged(items: list, desc: str, unit: str) -> Iterator:
    note(f"{desc}: {len(items)} {unit}{'' if len(items) == 1 else 's'} ...")
    t = time.perf_counter()
    yield from items
    note(f"{desc}: done in {time.perf_counter() - t:.1f} s")


def note(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
