"""Record an example notebook for real: run every cell on a Tactus kernel and
answer its cards by clicking, as a person in JupyterLab would.

    python scripts/record_notebook.py notebooks/human-in-the-loop.ipynb \
        --person notebooks/human-in-the-loop.person.json

The person file maps a request's message to what the person does:
``"Approve"`` (click that button), ``{"type": "Ada", "click": "Submit"}``
(type into the text box first), ``{"choose": 1, "click": "Submit"}``
(pick an option), ``{"feedback": "...", "edit": "...", "click": "Publish"}``
(review). Clicks travel as the same comm messages a browser sends, the
outputs are the kernel's own, and ``metadata.tactus`` is filled from the
kernel's update ops, exactly as the lab extension does.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import nbformat
from nbformat.v4 import new_output, output_from_msg

from tactus_kernel.replay.notebook_io import write_notebook
from tactus_kernel.testing import Card, CellRun, KernelDriver


def answer(card: Card, person: dict[str, Any]) -> None:
    """Do to a waiting card what the person file says for its message."""
    message = next((m for m in person if m in card.text), None)
    if message is None:
        raise SystemExit(f"the person file says nothing about this card:\n{card.text}")
    action = person[message]
    if isinstance(action, str):
        action = {"click": action}
    time.sleep(0.2)  # a person reads the card first
    if "choose" in action:
        dropdown = card.dropdown_labels()
        card.choose(dropdown[action["choose"]] if isinstance(action["choose"], int) else action["choose"])
    if "edit" in action:
        card.type(action["edit"], into="Artifact")
    if "feedback" in action:
        card.type(action["feedback"], into="Feedback")
    if "type" in action:
        card.type(action["type"])
    card.click(action["click"])


def outputs(run: CellRun) -> list[Any]:
    """A cell's outputs as JupyterLab keeps them: an update_display_data
    replaces the output shown under its display id (an answered card, a
    finished timeline become static there)."""
    shown: list[Any] = []
    where: dict[str, int] = {}
    for m in run.messages:
        kind = m["msg_type"]
        display_id = (m["content"].get("transient") or {}).get("display_id")
        if kind == "update_display_data":
            if display_id in where:
                content = m["content"]
                shown[where[display_id]] = new_output(
                    "display_data", data=content["data"], metadata=content.get("metadata") or {}
                )
            continue
        if kind in ("stream", "display_data", "execute_result", "error"):
            if display_id:
                where[display_id] = len(shown)
            shown.append(output_from_msg(m))
    return shown


def record(path: Path, person: dict[str, Any], timeout: float, fresh: bool = False) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validator.normalize(nb)
    if fresh:  # forget the old record: every question is asked, and answered by the person file, anew
        nb.metadata.pop("tactus", None)
    driver = KernelDriver(path.parent)
    try:
        driver.open_tactus(nb.metadata.get("tactus"))
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            run = driver.wait(
                driver.submit(cell.source, cell_id=cell.id), timeout, on_card=lambda card: answer(card, person)
            )
            cell.outputs = outputs(run)
            cell.execution_count = run.reply["content"].get("execution_count") if run.reply else None
            print(f"cell {index}: {run.status}", file=sys.stderr)
            if run.status != "ok":
                raise SystemExit(f"cell {index} failed: {run.errors}")
        driver.drain(0.5)
        tactus = nb.metadata.setdefault("tactus", {"version": 1, "procedures": {}})
        tactus["procedures"] = driver.recorded_procedures(start=tactus["procedures"])
    finally:
        driver.shutdown()
    nb.metadata["kernelspec"] = {"name": "tactus", "display_name": "Tactus (Lua)", "language": "lua"}
    nb.metadata["language_info"] = {
        "name": "lua",
        "version": "5.4",
        "codemirror_mode": "lua",
        "file_extension": ".lua",
        "mimetype": "text/x-lua",
    }
    write_notebook(nb, path)  # atomic: a kill while writing leaves the old notebook


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebook", type=Path)
    parser.add_argument("--person", type=Path, help="JSON: message -> what the person does")
    parser.add_argument("--timeout", type=float, default=120)
    parser.add_argument("--fresh", action="store_true", help="forget the notebook's record and record anew")
    args = parser.parse_args()
    person = json.loads(args.person.read_text()) if args.person else {}
    record(args.notebook, person, args.timeout, args.fresh)


if __name__ == "__main__":
    main()
