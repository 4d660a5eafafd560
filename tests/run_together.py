"""`run_together(work, n)`: call work(0) ... work(n-1) from n threads released at the same moment (the concurrency
tests' harness); returns {i: result}, and raises the first error a thread met."""

from __future__ import annotations

import threading
from typing import Any, Callable, Dict


def run_together(work: Callable[[int], Any], n: int = 4, timeout: float = 120) -> Dict[int, Any]:
    barrier = threading.Barrier(n)
    results: Dict[int, Any] = {}
    errors = []

    def body(i: int) -> None:
        try:
            barrier.wait()
            results[i] = work(i)
        except Exception as e:  # noqa: BLE001 - raised in the caller's thread below
            errors.append(e)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=timeout)
    if errors:
        raise errors[0]
    assert len(results) == n, f"{n - len(results)} thread(s) did not finish within {timeout} s"
    return results
