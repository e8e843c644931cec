"""Agent turn overhead: N turns through the kernel runtime vs pydantic-ai directly.

    python benchmarks/bench_agents.py [N]

Both sides use pydantic-ai's ``TestModel`` (no network) and carry the
conversation history from turn to turn, so the model work is the same;
what the kernel adds is the Lua side of a turn, the effect round trip,
template rendering, the request hash, streaming to the host and recording
each turn (messages as JSON) in the checkpoint log. Measured side by side
in one process, interleaved, so the ratio holds on any machine. Not a
pass/fail test: ``benchmarks/run.py`` reports it.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import tempfile
import time
from collections.abc import AsyncIterable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage
from pydantic_ai.models.test import TestModel

from tactus_kernel.host import NullHost
from tactus_kernel.runtime import Runtime

CELL = """
agent("bench", {model = "test", system_prompt = "You are a benchmark.", quiet = %s})
procedure({name = "bench"}, function()
  for i = 1, %d do Bench.turn({inject = "turn " .. i}) end
  return Iterations.current()
end)
"""




def kernel_turns(n: int, quiet: bool = False) -> float:
    """Seconds for one cell that takes n turns (a fresh runtime, so every turn is live)."""
    with tempfile.TemporaryDirectory() as tmp:
        rt = Runtime(root=tmp, host=NullHost())
        code = CELL % ("true" if quiet else "false", n)
        asyncio.run(rt.execute('agent("warm", {model = "test"})\nWarm.turn()', "[warm]", "warm"))
        gc.collect()  # garbage of earlier rounds is not this round's cost
        t0 = time.process_time()
        [turns] = asyncio.run(rt.execute(code, "[bench]", "bench"))
        elapsed = time.process_time() - t0
        assert turns == n, turns
        return elapsed


async def _drain(ctx: Any, events: AsyncIterable[Any]) -> None:
    async for _ in events:
        pass


def direct_turns(n: int, streaming: bool = False) -> float:
    """Seconds for n ``Agent.run`` calls with TestModel, history carried along.

    ``streaming``: with an event stream handler, as the kernel runs turns
    (so text can stream into the cell); pydantic-ai then uses the model's
    streaming path, which costs more on its own.
    """
    agent: Agent[None, str] = Agent(TestModel(), instructions="You are a benchmark.")
    handler = _drain if streaming else None

    async def run() -> float:
        await agent.run("warm up", event_stream_handler=handler)
        history: list[ModelMessage] = []
        gc.collect()
        t0 = time.process_time()
        for i in range(1, n + 1):
            result = await agent.run(f"turn {i}", message_history=history, event_stream_handler=handler)
            history = result.all_messages()
        return time.process_time() - t0

    return asyncio.run(run())


def measure(n: int, rounds: int = 7) -> dict[str, Any]:
    """Time n turns each way, ``rounds`` times interleaved; the best of each
    (the work is CPU-bound and deterministic, so the fastest round is the one
    least disturbed by the rest of the machine) and the ratios.

    Like is compared with like: a kernel turn that streams its text into the
    cell against pydantic-ai with an event stream handler, and a ``quiet``
    agent (nothing shown as it comes, so no streaming) against a plain
    ``Agent.run``.
    """
    kernel: list[float] = []
    quiet: list[float] = []
    direct: list[float] = []
    streamed: list[float] = []
    for _ in range(rounds):
        kernel.append(kernel_turns(n))
        streamed.append(direct_turns(n, streaming=True))
        quiet.append(kernel_turns(n, quiet=True))
        direct.append(direct_turns(n))
    k, q, d, s = min(kernel), min(quiet), min(direct), min(streamed)
    return {
        "turns": n,
        "kernel_streaming_s": round(k, 4),
        "direct_streaming_s": round(s, 4),
        "kernel_quiet_s": round(q, 4),
        "direct_s": round(d, 4),
        "kernel_ms_per_turn": round(k / n * 1000, 3),
        "direct_streaming_ms_per_turn": round(s / n * 1000, 3),
        "overhead_ms_per_turn": round((k - s) / n * 1000, 3),
        "overhead_quiet_ms_per_turn": round((q - d) / n * 1000, 3),
        "ratio": round(k / s, 3),
        "ratio_quiet": round(q / d, 3),
        "target": "< 1.10x",
    }


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    for key, value in measure(count).items():
        print(f"{key:>22}: {value}")
