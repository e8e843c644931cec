"""``Sleep(s)``: the first effect, and the model for the others."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from tactus_kernel.engine.feature import Feature

if TYPE_CHECKING:
    from tactus_kernel.engine.runs import RunState
    from tactus_kernel.engine.runtime import Runtime


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


class SleepFeature(Feature[None]):
    """``Sleep(s)`` (its Lua half is in engine/lua/primitives.lua)."""

    name = "sleep"

    def install(self, runtime: Runtime, state: None) -> None:
        runtime.register_effect("sleep", sleep_effect)
