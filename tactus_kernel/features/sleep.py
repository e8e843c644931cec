"""``Sleep(s)``: the first effect, and the model for the others."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tactus_kernel.engine.runtime import RunState, Runtime


async def sleep_effect(runtime: Runtime, run: RunState, request: Any) -> tuple[Any, ...]:
    """``Sleep(s)``: awaited, so the loop stays free; recorded, so replay is instant."""
    seconds = float(request["seconds"])
    name = f"sleep {seconds:g}s"
    if run.log.replay("sleep", name) is not None:
        return ()
    await asyncio.sleep(seconds)
    run.log.append("sleep", name, seconds)
    runtime.host.records_changed()
    return ()


def register(runtime: Runtime) -> None:
    runtime.effects["sleep"] = sleep_effect
