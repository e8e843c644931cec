"""Where the kernel's share of an agent turn goes, measured in place.

    python benchmarks/where_agents.py [--rounds 20] [--turns 10 40]

Runs ``bench_agents.interleaved`` (quiet turns, blocks of 10) with timers
around the parts of the kernel's work, and splits the kernel's CPU time
beyond the direct turns, per turn, into:

* ``model``: the kernel's ``Agent.run`` calls minus the direct ones. Both
  run the same pydantic-ai code; the kernel's run slower because the work
  between its turns leaves the caches cold for pydantic-ai.
* ``handler``: the turn effect's Python (``AgentService.turn``) outside
  ``Agent.run``: request, replay check, checkpoint, result.
* ``lua``: the driver's ``K.step`` calls from the first turn on: the Lua
  side of a turn and lupa's conversions.
* ``fill``: completing the turns' checkpoints at the end of the cell
  (messages dump, request hashes; ``Records.defer``).
* ``rest``: everything else: compiling the cell, the declarations and the
  procedure's start before the first turn, the driver and the cell's end.

With two conversation lengths (``--turns 10 40``) each part is also split
into a cost per cell and a cost per turn (a straight line through the two).
The parts are sums of CPU time measured in place, so they are steadier than
the ratio; ``model`` is a difference of two large sums and is not.
Each timer costs about a microsecond, counted in its part.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_agents
from pydantic_ai import Agent

from tactus_kernel.engine import records as checkpoints
from tactus_kernel.engine.runtime import Runtime
from tactus_kernel.features.agents import service

PARTS = ("model", "handler", "lua", "fill", "rest")


class Timers:
    """CPU seconds of each part in the timed cell of one round."""

    def __init__(self) -> None:
        self.sums = {"run": 0.0, "turn": 0.0, "lua": 0.0, "fill": 0.0}
        self.on = False  # from the timed cell's first turn on

    def add(self, part: str, since: float) -> None:
        if self.on:
            self.sums[part] += time.process_time() - since

    def install(self) -> None:
        timers = self
        runtime_init, turn, agent_run = Runtime.__init__, service.AgentService.turn, Agent.run
        fill = checkpoints.Records.fill_deferred

        def init(self: Runtime, *args: Any, **kwargs: Any) -> None:
            runtime_init(self, *args, **kwargs)
            step = self._step

            def timed_step(*values: Any) -> Any:
                t0 = time.process_time()
                try:
                    return step(*values)
                finally:
                    timers.add("lua", t0)

            self._step = timed_step

        async def timed_turn(self: service.AgentService, run: Any, request: Any) -> tuple[Any, ...]:
            timers.on = run.key == "bench"
            t0 = time.process_time()
            try:
                return await turn(self, run, request)
            finally:
                timers.add("turn", t0)

        async def timed_run(self: Agent[Any, Any], *args: Any, **kwargs: Any) -> Any:
            t0 = time.process_time()
            try:
                return await agent_run(self, *args, **kwargs)
            finally:
                if kwargs.get("deps") is not None:  # the kernel's (the direct agent has no deps)
                    timers.add("run", t0)

        def timed_fill(self: checkpoints.Records) -> None:
            t0 = time.process_time()
            fill(self)
            timers.add("fill", t0)

        Runtime.__init__ = init  # type: ignore[method-assign]
        service.AgentService.turn = timed_turn  # type: ignore[method-assign]
        Agent.run = timed_run  # type: ignore[method-assign, assignment]
        checkpoints.Records.fill_deferred = timed_fill  # type: ignore[method-assign]


def measure(turns: int, rounds: int, timers: Timers) -> dict[str, float]:
    """Mean microseconds a turn of each part, and the median ratio."""
    rows: list[dict[str, float]] = []
    for _ in range(rounds):
        timers.sums = dict.fromkeys(timers.sums, 0.0)
        timers.on = False
        kernel, direct = bench_agents.interleaved(turns, quiet=True)
        s = timers.sums
        rows.append(
            {
                "ratio": kernel / direct,
                "model": s["run"] - direct,
                "handler": s["turn"] - s["run"],
                "lua": s["lua"],
                "fill": s["fill"],
                "rest": kernel - s["turn"] - s["lua"] - s["fill"],
            }
        )
    out = {p: statistics.mean(r[p] for r in rows) / turns * 1e6 for p in PARTS}
    out["ratio"] = statistics.median(r["ratio"] for r in rows)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--turns", type=int, nargs="+", default=[bench_agents.SHORT])
    args = parser.parse_args()
    timers = Timers()
    timers.install()
    results = {n: measure(n, args.rounds, timers) for n in args.turns}
    for n, r in results.items():
        print(
            f"{n:>3} turns: ratio {r['ratio']:.3f}; us a turn: "
            + ", ".join(f"{p} {r[p]:.0f}" for p in PARTS)
            + f" (total {sum(r[p] for p in PARTS):.0f})"
        )
    if len(args.turns) == 2:
        (a, ra), (b, rb) = results.items()
        print("per cell (us) and per turn (us), from the two lengths:")
        for p in PARTS:
            per_turn = (rb[p] * b - ra[p] * a) / (b - a)
            print(f"  {p:>8}: {ra[p] * a - per_turn * a:7.0f} a cell, {per_turn:5.0f} a turn")


if __name__ == "__main__":
    main()
