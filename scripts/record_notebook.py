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
from nbformat.v4 import output_from_msg

from tactus_kernel.replay_client import write_notebook
from tactus_kernel.testing import KernelDriver


def answer_card(driver: KernelDriver, message: str, action: Any) -> None:
    if isinstance(action, str):
        action = {"click": action}
    if "type" in action:
        boxes = driver.widgets_where(_model_name="TextModel") + driver.widgets_where(_model_name="TextareaModel")
        driver.set_value([b for b in boxes if not driver.widgets[b].get("disabled")][-1], action["type"])
    if "choose" in action:
        choice = driver.widgets_where(_model_name="DropdownModel")[-1]
        driver.send_comm("comm_msg", {"comm_id": choice, "data": {"method": "update",
                                                                  "state": {"index": action["choose"]},
                                                                  "buffer_paths": []}})
    areas = [a for a in driver.widgets_where(_model_name="TextareaModel") if not driver.widgets[a].get("disabled")]
    if "edit" in action:
        artifact = next(a for a in areas if not driver.widgets[a].get("placeholder", "").startswith("Feedback"))
        driver.set_value(artifact, action["edit"])
    if "feedback" in action:
        driver.set_value(next(a for a in areas if driver.widgets[a].get("placeholder", "").startswith("Feedback")),
                         action["feedback"])
    time.sleep(0.2)  # a person reads the card first
    driver.wait_until(lambda: driver.widgets_where(_model_name="ButtonModel", description=action["click"],
                                                   disabled=False))
    driver.click(driver.button(action["click"]))


def waiting_message(driver: KernelDriver, person: dict[str, Any], seen: set[str]) -> str | None:
    """The message of a new card on screen (each card's header is seen once)."""
    for comm_id, st in list(driver.widgets.items()):
        value = str(st.get("value", ""))
        if comm_id in seen or st.get("_model_name") != "HTMLModel" or "replayed" in value:
            continue
        for msg in person:
            if f">{msg}<" in value:
                seen.add(comm_id)
                return msg
    return None


def record(path: Path, person: dict[str, Any], timeout: float) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validator.normalize(nb)
    driver = KernelDriver(path.parent)
    seen: set[str] = set()
    try:
        driver.open_tactus(nb.metadata.get("tactus"))
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            run = driver.submit(cell.source, cell_id=cell.id)
            deadline = time.monotonic() + timeout
            while run.reply is None:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"cell {index} did not finish")
                driver.drain(0.05)
                try:
                    reply = driver.kc.get_shell_msg(timeout=0.05)
                    if reply["parent_header"].get("msg_id") == run.msg_id:
                        run.reply = reply
                        break
                except Exception:  # noqa: BLE001 - queue.Empty: keep polling
                    pass
                message = waiting_message(driver, person, seen)
                if message is not None:
                    answer_card(driver, message, person[message])
            driver.wait(run, timeout)
            cell.outputs = [output_from_msg(m) for m in run.messages
                            if m["msg_type"] in ("stream", "display_data", "execute_result", "error")]
            cell.execution_count = run.reply["content"].get("execution_count")
            print(f"cell {index}: {run.status}", file=sys.stderr)
            if run.status != "ok":
                raise SystemExit(f"cell {index} failed: {run.errors}")
        driver.drain(0.5)
        tactus = nb.metadata.setdefault("tactus", {"version": 1, "procedures": {}})
        tactus["procedures"] = driver.recorded_procedures(start=tactus["procedures"])
    finally:
        driver.shutdown()
    nb.metadata["kernelspec"] = {"name": "tactus", "display_name": "Tactus (Lua)", "language": "lua"}
    nb.metadata["language_info"] = {"name": "lua", "version": "5.4", "codemirror_mode": "lua",
                                    "file_extension": ".lua", "mimetype": "text/x-lua"}
    write_notebook(nb, path)  # atomic: a kill while writing leaves the old notebook


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebook", type=Path)
    parser.add_argument("--person", type=Path, help="JSON: message -> what the person does")
    parser.add_argument("--timeout", type=float, default=120)
    args = parser.parse_args()
    person = json.loads(args.person.read_text()) if args.person else {}
    record(args.notebook, person, args.timeout)


if __name__ == "__main__":
    main()
