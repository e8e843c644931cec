"""``File.*``: reading and writing inside the notebook's folder only.

Paths are resolved (symlinks included) before the check, so neither
``..`` nor a link can lead outside the folder the kernel started in.
"""

from __future__ import annotations

from pathlib import Path

from tactus_kernel.engine.atomic import atomic_write

MAX_READ = 64 * 1024 * 1024


class FileError(PermissionError):
    """A path outside the notebook's folder, or a file that cannot be used."""


def confined(root: Path, path: str) -> Path:
    if not path or "\x00" in path:
        raise FileError(f"File: invalid path {path!r}")
    p = Path(path)
    if p.is_absolute():
        raise FileError(f"File: absolute path {path!r} refused; paths are relative to the notebook's folder")
    resolved = (root / p).resolve()
    if resolved != root and root not in resolved.parents:
        raise FileError(f"File: path {path!r} leaves the notebook's folder and is refused")
    return resolved


def file_op(root: Path, op: str, path: str, data: str | None = None) -> object:
    target = confined(root, str(path))
    if op == "exists":
        return target.exists()
    if op == "size":
        if not target.is_file():
            raise FileError(f"File.size: no such file {path!r}")
        return target.stat().st_size
    if op == "read":
        if not target.is_file():
            raise FileError(f"File.read: no such file {path!r}")
        if target.stat().st_size > MAX_READ:
            raise FileError(f"File.read: {path!r} is larger than {MAX_READ // 2**20} MiB")
        try:
            return target.read_text("utf-8")
        except UnicodeDecodeError:
            raise FileError(f"File.read: {path!r} is not UTF-8 text") from None
    if op == "write":
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(target, (data or "").encode("utf-8"))  # a kill mid-write leaves the old file
        except OSError as exc:  # a folder in the way, a full disk, no permission...
            raise FileError(f"File.write: cannot write {path!r}: {exc.strerror or exc}") from None
        return True
    raise FileError(f"File: unknown operation {op!r}")
