"""Where the kernel's share of an agent turn goes: the benchmark with parts removed.

    python benchmarks/ablate_agents.py [--turns 20] [--rounds 40] [PART ...]

Each PART switches one piece of a turn's bookkeeping off (see ``PARTS``);
``base`` is the kernel as it is. Every round runs each part once, in turn,
as a pair of separate runs (``bench_agents.paired``, the way
``bench_agents.measure`` takes the short case), so the parts see the same
machine; the printed ratio is the median over the rounds. A part's cost is its distance
from ``base``. The kernel with a part removed is not a correct kernel (turns
are not recorded, or cannot be replayed): this is a measuring tool only.

Single parts move the 20-turn ratio by 0.01 to 0.03, not far above the
noise of 30 to 40 rounds here, so compare a part with ``base`` from the
same run only.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_agents

from tactus_kernel.engine import records as checkpoints
from tactus_kernel.features import timeline
from tactus_kernel.features.agents import service
from tactus_kernel.features.agents.models import offline_model

Undo = Callable[[], None]


def _patch(owner: Any, name: str, new: Any) -> Undo:
    old = getattr(owner, name)
    setattr(owner, name, new)
    return lambda: setattr(owner, name, old)


def _no_fill() -> list[Undo]:
    """Deferred record completion (messages dump, request hash) is dropped."""

    def drop(self: checkpoints.Records) -> None:
        self.deferred = []

    return [_patch(checkpoints.Records, "fill_deferred", drop)]


def _no_trail() -> list[Undo]:
    """The timeline is not told of turns starting and ending."""
    return [
        _patch(timeline.Trail, "recorded", lambda self, entry: None),
        _patch(timeline.Trail, "started", lambda self, kind, name: None),
    ]


def _no_digest() -> list[Undo]:
    """The request is neither summarised nor hashed."""
    return [
        _patch(service.Request, "digest", lambda self: "0" * 16),
        _patch(service.Request, "summary", lambda self: {}),
    ]


def _no_dump() -> list[Undo]:
    """Every turn's messages dump as the first turn's did (no serialising)."""
    dump = service.hist.dump
    first: dict[str, Any] = {}
    return [_patch(service.hist, "dump", lambda messages: first.setdefault("dump", dump(messages)))]


def _bare() -> list[Undo]:
    """No bookkeeping at all: the turn effect only calls ``Agent.run`` on
    the same pydantic-ai Agent and keeps the history. What is left is the
    effect round trip from Lua, the driver and the cell's own costs.
    Each run has its own history, as in the kernel: shared with the warm-up
    cell's run, the timed turns would send two more messages each."""
    histories: dict[tuple[int, int, str], list[Any]] = {}

    async def turn(self: service.AgentService, run: Any, request: Any) -> tuple[Any, ...]:
        name = str(request["name"])
        spec = self.agents[name]
        history = histories.setdefault((id(self), run.id, name), [])
        result = await self._agent(spec, []).run(
            request["inject"],
            model=offline_model(None)[0],
            instructions=spec.system_prompt,
            message_history=history,
            deps=service.TurnDeps(name, None),
        )
        history.extend(result.new_messages())
        return (None, result.output, 1, name, "test", False, None, 0, 0, 0, 1, 0)

    return [_patch(service.AgentService, "turn", turn)]


PARTS: dict[str, Callable[[], list[Undo]]] = {
    "base": list,
    "fill": _no_fill,
    "trail": _no_trail,
    "digest": _no_digest,
    "dump": _no_dump,
    "bare": _bare,
}


def ablate(parts: list[str], turns: int, rounds: int) -> dict[str, tuple[float, float]]:
    """Median ratio and kernel overhead (us a turn) of each part, paired by round."""
    pairs: dict[str, list[tuple[float, float]]] = {p: [] for p in parts}
    for r in range(rounds):
        for part in parts:
            undo: list[Undo] = []
            for piece in part.split("+"):
                undo += PARTS[piece]()
            try:
                # as bench_agents.measure takes the short case: separate runs, order alternating
                pairs[part].append(bench_agents.paired(turns, quiet=True, kernel_first=r % 2 == 0))
            finally:
                for u in reversed(undo):
                    u()
    return {
        p: (statistics.median(k / d for k, d in rs), statistics.median((k - d) / turns * 1e6 for k, d in rs))
        for p, rs in pairs.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "parts",
        nargs="*",
        default=["base", "fill", "trail", "digest", "dump", "bare"],
        help=f"parts to remove, joined with + to remove several ({', '.join(PARTS)})",
    )
    parser.add_argument("--turns", type=int, default=bench_agents.SHORT)
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    for part in args.parts:
        for piece in part.split("+"):
            if piece not in PARTS:
                parser.error(f"unknown part {piece!r} (known: {', '.join(PARTS)})")
    for part, (ratio, overhead) in ablate(args.parts, args.turns, args.rounds).items():
        label = part if part in ("base", "bare") else "without " + part
        print(f"{label:>24}: ratio {ratio:.3f}, overhead {overhead:.0f} us a turn")


if __name__ == "__main__":
    main()
