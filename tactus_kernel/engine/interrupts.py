"""Stopping Lua code that never comes back to Python.

A count hook would do it, but in Lua 5.4 any count hook makes the VM trap
on every instruction, which halves the speed of every cell. So driver
threads run with no hook, and an interrupt *arms* them from outside:
``lua_sethook(L, hookf, LUA_MASKCOUNT, 1)`` on each live thread, the same
call ``lua.c`` makes from its SIGINT handler. The hook (the Lua function
the sandbox registered for the thread) then raises on the next instruction.

This can run on another Python thread while the main thread is inside Lua:
lupa releases the GIL while Lua runs, ``lua_sethook`` only stores fields,
and the lock below makes sure a thread is never armed after the driver has
let it go (only then may Lua collect it).
"""

from __future__ import annotations

import ctypes
import threading

from lupa import lua54

LUA_MASKCOUNT = 1 << 3


def _address(text: str) -> int:
    """``"thread: 0x55d0c1a2b3c4"`` -> the lua_State pointer."""
    return int(str(text).rsplit(" ", 1)[-1], 16)


class Interrupter:
    """The live driver threads of one LuaRuntime, and the way to stop them."""

    def __init__(self, k: object) -> None:
        lib = ctypes.CDLL(lua54.__file__)
        self._sethook = lib.lua_sethook
        self._sethook.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
        self._sethook.restype = None
        gethook = lib.lua_gethook
        gethook.argtypes = [ctypes.c_void_p]
        gethook.restype = ctypes.c_void_p
        self._hookf = gethook(_address(k.hook_probe(True)))  # type: ignore[attr-defined]
        k.hook_probe(False)  # type: ignore[attr-defined]
        if not self._hookf:
            raise RuntimeError("cannot find Lua's debug hook function")
        self._lock = threading.Lock()
        self._states: dict[int, int] = {}

    def add(self, thread: int, address: str) -> None:
        with self._lock:
            self._states[thread] = _address(address)

    def remove(self, thread: int) -> None:
        """Call before the driver drops the thread (after that Lua may free it)."""
        with self._lock:
            self._states.pop(thread, None)

    def arm(self) -> None:
        """Make every live driver thread call its hook on its next instruction."""
        with self._lock:
            for state in self._states.values():
                self._sethook(state, self._hookf, LUA_MASKCOUNT, 1)
