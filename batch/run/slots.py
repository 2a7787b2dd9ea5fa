"""Job slots: at most `limit` items in flight (submitted and not yet downloaded).

The limit is acquired before an item's task is spawned, so a 100,000-item manifest never
has more than `limit` item tasks alive. When the API reports the account's ceiling on
parallel jobs, the limit drops to it, and a refused submit waits for one of our jobs to
finish (a release), not for a timer.
"""

from __future__ import annotations

import asyncio
import contextlib


class Slots:
    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"concurrency must be at least 1, got {limit}")
        self.limit = limit
        self.in_use = 0
        self._changed = asyncio.Condition()

    async def acquire(self) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self.in_use < self.limit)
            self.in_use += 1

    async def release(self) -> None:
        async with self._changed:
            self.in_use -= 1
            self._changed.notify_all()

    def shrink_to(self, limit: int) -> None:
        self.limit = max(1, min(self.limit, limit))

    async def wait_for_turn(self, max_wait_s: float) -> None:
        """After the API refused a submit for the account's ceiling: give the slot back and
        queue for one under the (lowered) limit, so that one finished job lets one refused
        submit through, not all of them at once. After `max_wait_s` (jobs of other runs on
        the same account may fill the ceiling, and their end sends us no signal) the slot
        is taken back regardless, for one more try."""
        async with self._changed:
            self.in_use -= 1
            self._changed.notify_all()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max_wait_s):
                    await self._changed.wait_for(lambda: self.in_use < self.limit)
            self.in_use += 1
