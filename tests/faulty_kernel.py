"""A Tactus kernel whose runtime fails on request, to prove that no
exception can leave a cell without its reply (tests/test_replies.py).

A cell ``raise NAME`` makes ``Runtime.execute`` raise that exception, and
``%tactus raise NAME`` makes the magic handler raise it, as a bug in the
kernel's own Python code would. Run as a script by a kernel spec the test
writes: ``python faulty_kernel.py -f CONNECTION_FILE``.
"""

from __future__ import annotations

from typing import Any

from ipykernel.kernelapp import IPKernelApp
from lupa import lua54

from tactus_kernel.engine.runtime import Runtime
from tactus_kernel.jupyter import magics
from tactus_kernel.jupyter.kernel import TactusKernel

FAULTS: dict[str, Any] = {
    "ValueError": lambda: ValueError("injected"),
    "TypeError": lambda: TypeError("injected"),
    "KeyError": lambda: KeyError("injected"),
    "AttributeError": lambda: AttributeError("injected"),
    "RuntimeError": lambda: RuntimeError("injected"),
    "RecursionError": lambda: RecursionError("maximum recursion depth exceeded"),
    "OverflowError": lambda: OverflowError("Python int too large to convert to C long"),
    "UnicodeDecodeError": lambda: UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"),
    "ZeroDivisionError": lambda: ZeroDivisionError("division by zero"),
    "OSError": lambda: OSError(28, "No space left on device"),
    "MemoryError": lambda: MemoryError(),
    "LuaError": lambda: lua54.LuaError("injected"),
    "AssertionError": lambda: AssertionError(),
    "KeyboardInterrupt": lambda: KeyboardInterrupt(),
}

original_execute = Runtime.execute
original_magic = magics.run


async def execute(self: Runtime, code: str, label: str = "[cell]", key: str | None = None) -> list[Any]:
    if code.startswith("raise "):
        raise FAULTS[code.split()[1]]()
    return await original_execute(self, code, label, key)


async def magic(kernel: Any, code: str, label: str) -> list[Any]:
    if code.startswith("%tactus raise "):
        raise FAULTS[code.split()[2]]()
    return await original_magic(kernel, code, label)


Runtime.execute = execute  # type: ignore[method-assign]
magics.run = magic

if __name__ == "__main__":
    IPKernelApp.launch_instance(kernel_class=TactusKernel)
