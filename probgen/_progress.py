"""Progress bars of the command line (stderr, with an ETA; ``--no-progress`` turns them off).

Library code never prints: samplers take an optional ``callback`` and the CLI turns the work it
hands out (chunks of samples, runs to compare, an evaluation of estimated cost) into a bar here.
"""

from __future__ import annotations

import sys
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterator

__all__ = ["bar", "timed"]


def bar(total: int, desc: str, *, enabled: bool = True, unit: str = "it") -> Any:
    """A tqdm bar on stderr over ``total`` units of work, with elapsed time and ETA.

    Example:
        >>> with bar(3, "demo", enabled=False) as b:
        ...     _ = b.update(3)
        >>> b.total
        3
    """
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, file=sys.stderr, unit=unit, mininterval=0.5,
                dynamic_ncols=True, leave=True)


@contextmanager
def timed(desc: str, estimate_s: float, *, enabled: bool = True) -> Iterator[None]:
    """A bar over one call that cannot report its progress, whose cost was estimated beforehand (from a
    measured probe): it fills with the elapsed time, the ETA is the estimate minus the elapsed time, and
    it completes when the call returns.

    Example:
        >>> with timed("demo", 0.1, enabled=False):
        ...     pass
    """
    if not enabled:
        yield
        return
    from tqdm.auto import tqdm

    total = max(float(estimate_s), 0.1)
    handle = tqdm(total=round(total, 1), desc=desc, file=sys.stderr, unit="s", mininterval=0.5, dynamic_ncols=True,
                  bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining} (ETA estimated)")
    stop = threading.Event()
    start = time.perf_counter()

    def tick() -> None:
        while not stop.wait(0.5):
            handle.n = round(min(time.perf_counter() - start, 0.99 * total), 1)
            handle.refresh()

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    try:
        yield
        handle.n = handle.total
    finally:
        stop.set()
        thread.join()
        handle.refresh()
        handle.close()
