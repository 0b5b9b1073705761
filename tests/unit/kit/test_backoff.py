"""``redisconn.Backoff``: the pause of the Redis loops between a failure and a retry."""
from __future__ import annotations

import asyncio

from brokers.kit.redisconn import Backoff


def test_the_pause_doubles_up_to_the_cap_and_a_success_starts_again() -> None:
    async def main() -> list[float]:
        b = Backoff(first=0.001, cap=0.004)
        seen = []
        for _ in range(4):
            seen.append(b.delay)
            await b.pause()
        b.reset()
        return seen + [b.delay]

    assert asyncio.run(main()) == [0.001, 0.002, 0.004, 0.004, 0.001]
