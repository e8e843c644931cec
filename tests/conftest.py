"""Shared fixtures: an in-process runtime and a real kernel."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from kernel_driver import KernelDriver

from tactus_kernel.engine.errors import CellError
from tactus_kernel.engine.host import BaseHost
from tactus_kernel.features import default_runtime


class RecordingHost(BaseHost):
    """A host that keeps what the runtime wrote, for assertions."""

    def __init__(self) -> None:
        self.out: list[tuple[str, str]] = []
        self.displayed: list[dict[str, Any]] = []
        self.changes = 0

    def write(self, stream: str, text: str) -> None:
        self.out.append((stream, text))

    def display(self, data: dict[str, Any], metadata: dict[str, Any] | None = None) -> None:
        self.displayed.append(data)

    def records_changed(self) -> None:
        self.changes += 1

    @property
    def stdout(self) -> str:
        return "".join(t for s, t in self.out if s == "stdout")

    @property
    def stderr(self) -> str:
        return "".join(t for s, t in self.out if s == "stderr")


class Cells:
    """Run cells on an in-process runtime: ``cells("1 + 2") == [3]``."""

    def __init__(self, root: Path) -> None:
        self.host = RecordingHost()
        self.runtime = default_runtime(root=root, host=self.host)
        self.count = 0

    def __call__(self, code: str, key: str = "cell-a") -> list[Any]:
        self.count += 1
        return asyncio.run(self.runtime.execute(code, f"[cell {self.count}]", key))

    def error(self, code: str, key: str = "cell-a") -> CellError:
        with pytest.raises(CellError) as info:
            self(code, key)
        return info.value


@pytest.fixture
def cells(tmp_path: Path) -> Cells:
    return Cells(tmp_path)


@pytest.fixture
def kernel(tmp_path: Path) -> Iterator[KernelDriver]:
    driver = KernelDriver(tmp_path)
    try:
        yield driver
    finally:
        driver.shutdown()
