"""Kernel memory and live widgets per answered card.

Runs a real kernel over jupyter_client (tests/kernel_driver.py), answers
N approval cards in one cell the way the ipywidgets frontend clicks, and
prints the kernel's RSS growth per card and its live widgets and comms
before and after (widgets counted on the ``jupyter.widget.control`` comm,
as a reloaded page asks for them; comms by ``comm_info_request``).

    python benchmarks/bench_cards.py --cards 1000
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from kernel_driver import KernelDriver

LOOP = 'for i = 1, {n} do Human.approve({{message = "card " .. i}}) end'


def answer_all(d: KernelDriver, n: int, cell_id: str) -> None:
    """Run a cell asking `n` approvals and click Approve on each in turn."""
    run = d.submit(LOOP.format(n=n), cell_id=cell_id)
    clicked: set[str] = set()
    for _ in range(n):
        d.wait_until(lambda: any(c not in clicked for c in _approve_buttons(d)), timeout=60)
        button = next(c for c in _approve_buttons(d) if c not in clicked)
        clicked.add(button)
        d.click(button)
    d.wait(run, timeout=120)
    assert run.status == "ok", run.errors


def _approve_buttons(d: KernelDriver) -> list[str]:
    return [
        cid
        for cid in d.widgets_where(_model_name="ButtonModel", description="Approve")
        if not d.widgets[cid].get("disabled")
    ]


def measure(cards: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        d = KernelDriver(tmp)
        try:
            d.open_tactus(None)
            proc = psutil.Process(d.km.provisioner.process.pid)  # type: ignore[union-attr]
            answer_all(d, 1, "warm-up")  # imports ipywidgets, builds the runtime
            before = {"rss": proc.memory_info().rss, "widgets": d.live_widgets(), "comms": d.open_comms()}
            answer_all(d, cards, "soak")
            after = {"rss": proc.memory_info().rss, "widgets": d.live_widgets(), "comms": d.open_comms()}
        finally:
            d.shutdown()
    return {
        "cards": cards,
        "before": before,
        "after": after,
        "kib_per_card": round((after["rss"] - before["rss"]) / 1024 / cards, 2),
        "widgets_per_card": round((after["widgets"] - before["widgets"]) / cards, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cards", type=int, default=1000)
    print(json.dumps(measure(parser.parse_args().cards), indent=2))


if __name__ == "__main__":
    main()
