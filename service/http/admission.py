"""Admission: the queue slots every API server shares, and who holds them.

``--queue-limit`` slots, one per request admitted and not yet answered, in a semaphore shared by every
API-server process (forked from the main process after this is made): taking a slot without waiting
and giving it back are one C call each. The semaphore cannot tell whose slots are taken, so each API
server also counts the slots it holds in an entry of its own, claimed by its pid as it starts: when one
dies, the main process gives its slots back (``reclaim``) before its replacement claims the entry.
"""

from __future__ import annotations

import multiprocessing as mp
import os


class Admission:
    def __init__(self, queue_limit: int, api_servers: int) -> None:
        context = mp.get_context("fork")
        self.queue_limit = queue_limit
        self._free = context.Semaphore(queue_limit)
        self._holders = context.RawArray("q", api_servers)  # each entry's API server (pid); 0: free
        self._held = context.RawArray("q", api_servers)  # slots it holds; written only by that process
        self._claiming = context.Lock()
        self._entry = 0  # this process's (claim)

    def claim(self) -> None:
        """Called in each API-server process as it starts."""
        with self._claiming:
            self._entry = list(self._holders).index(0)
            self._holders[self._entry] = os.getpid()
            self._held[self._entry] = 0

    def take(self) -> bool:
        """A slot for one request, if one is free."""
        if not self._free.acquire(False):
            return False
        self._held[self._entry] += 1
        return True

    def free(self) -> int:
        """Slots free now (another process may take them the next moment: ``take`` decides)."""
        return self._free.get_value()

    def give_back(self) -> None:
        self._held[self._entry] -= 1
        self._free.release()

    def reclaim(self, pid: int) -> int:
        """Give back the slots of API server ``pid``, which died (in the main process). Returns how many."""
        if not self._claiming.acquire(timeout=1.0):  # it died claiming: no entry is its yet
            return 0
        try:
            if pid not in self._holders:
                return 0
            entry = list(self._holders).index(pid)
            held = self._held[entry]
            self._held[entry] = self._holders[entry] = 0
        finally:
            self._claiming.release()
        for _ in range(held):
            self._free.release()
        return held

    def in_flight(self) -> int:
        """Requests admitted and not yet answered, across every API server."""
        return self.queue_limit - self.free()

    def api_servers(self) -> int:
        """API servers that claimed an entry and are alive."""
        return sum(1 for pid in self._holders if pid and _alive(pid))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
