"""Atomic file writes: the target holds its old bytes or its new bytes, never a part.

Every file the project writes (a replayed notebook, ``File.write``, the
kernel spec) goes through :func:`atomic_write`: the bytes go to a temporary
file in the target's own folder (so the rename never crosses a file
system), are fsynced, checked, and only then renamed over the target with
``os.replace``, which POSIX and Windows make atomic. A failure or a SIGTERM
during the write removes the temporary file and leaves the target as it
was; a SIGKILL cannot be caught, so its temporary file (named for the dead
process) is removed by the next write to that folder.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

_TEMP_MARK = ".tactus-tmp"


class _Terminated(BaseException):
    """SIGTERM arrived during a write: unwind, clean up, then re-deliver it."""


def temp_name_prefix(target: Path) -> str:
    """The prefix of this process's temporary files for `target` (tests look for them)."""
    return f".{target.name}.{os.getpid()}."


def _remove_stale(folder: Path, name: str) -> None:
    """Remove temporary files for `name` left by processes that were killed (SIGKILL)."""
    with contextlib.suppress(OSError):
        for entry in folder.iterdir():
            parts = entry.name.split(".")
            # .NAME.PID.RANDOM.tactus-tmp
            if not entry.name.endswith(_TEMP_MARK) or not entry.name.startswith(f".{name}."):
                continue
            try:
                pid = int(parts[-3])
            except (ValueError, IndexError):
                continue
            if pid == os.getpid() or _alive(pid):
                continue
            with contextlib.suppress(OSError):
                entry.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """While the block runs, SIGTERM raises inside it (so ``finally`` clean-up
    runs) and is delivered again, to whatever handled it before, afterwards."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGTERM"):
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous == signal.SIG_IGN:
        yield
        return
    received = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal received
        received = True
        raise _Terminated

    signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    except _Terminated:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
    if received:
        signal.raise_signal(signal.SIGTERM)  # the default action ends the process here
        raise InterruptedError("the write was stopped by SIGTERM")


def _new_file_mode() -> int:
    """What ``open(path, "w")`` would give a new file: 0o666 less the umask.
    Linux says the umask in /proc; setting it to read it back is a last resort
    (it changes the process's umask for an instant, for every thread)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(target: str | Path, data: bytes, check: Callable[[bytes], None] | None = None) -> None:
    """Replace `target` with `data` atomically.

    `check` (if given) is called with the bytes read back from the fsynced
    temporary file before it replaces the target; whatever it raises leaves
    the target untouched. An existing target keeps its permission bits.
    """
    target = Path(target)
    folder = target.parent
    _remove_stale(folder, target.name)
    try:
        mode = target.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = _new_file_mode()
    tmp: str | None = None
    with _sigterm_unwinds():
        try:
            # the name is known before the file exists, so a SIGTERM at any
            # instant from here on finds it in `tmp` for the clean-up below
            tmp = str(folder / f"{temp_name_prefix(target)}{secrets.token_hex(6)}{_TEMP_MARK}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, mode)
            if check is not None:
                check(Path(tmp).read_bytes())
            os.replace(tmp, target)
            tmp = None
            _fsync_folder(folder)
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (POSIX only; a no-op where folders cannot be opened)."""
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
