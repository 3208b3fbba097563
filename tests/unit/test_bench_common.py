"""bench/common.py: a recorder's watch that goes silent is opened again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from bench import common


def test_a_silent_stream_times_out_but_a_slow_consumer_does_not() -> None:
    closed = []

    async def stream() -> AsyncIterator[int]:
        try:
            yield 1
            yield 2
            await asyncio.sleep(3600)  # a connection whose server was cut off
            yield 3
        finally:
            closed.append(True)

    async def main() -> list[int]:
        got: list[int] = []
        with pytest.raises(TimeoutError):
            async for item in common.quiet_bounded(stream(), 0.2):
                got.append(item)
                await asyncio.sleep(0.3)
        return got

    assert asyncio.run(main()) == [1, 2]
    assert closed == [True]


def test_a_stream_that_ends_ends() -> None:
    async def stream() -> AsyncIterator[str]:
        yield "a"

    async def main() -> list[str]:
        return [x async for x in common.quiet_bounded(stream(), 1.0)]

    assert asyncio.run(main()) == ["a"]
