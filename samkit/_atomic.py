"""The one way samkit writes a file: whole or not at all, with the mode the user's umask gives.

Every writer here goes through :func:`replacing`: the content goes to a new temporary file in the
destination's folder, is flushed and ``fsync``-ed, and is renamed over the destination with
``os.replace`` (atomic on POSIX and Windows), so a reader — or a run resumed after a crash or a
full disk — never sees half a file; on any failure the temporary file is removed and the old file
is left as it was. The temporary file is created with ``os.open(..., 0o666)``, so the kernel applies
the umask exactly as for a plain ``open()`` (``0644`` under umask ``022``, ``0664`` under ``002``):
a study shared with teammates stays readable (``tempfile.mkstemp`` would make every file ``0600``).

No folder is created here: callers make the folders they mean to (a typo in a path should not
grow a directory tree). Private to samkit; every layer (``data``, ``measure``, ``theory``,
``train``, ``study``, the benchmarks) may import it.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

__all__ = [
    "replacing",
    "save_figure",
    "save_npz",
    "save_torch",
    "write_bytes",
    "write_json",
    "write_text",
]

_O_BINARY = getattr(os, "O_BINARY", 0)  # Windows: no newline translation


@contextlib.contextmanager
def replacing(path: str | os.PathLike) -> Iterator[IO[bytes]]:
    """A binary file handle whose content replaces ``path`` atomically when the block ends.

    Example:
        >>> with replacing("out/model.pt") as handle:
        ...     torch.save(state, handle)
    """
    path = Path(path)
    tmp, fd = _create_temporary(path)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())  # the bytes are on disk before the name points at them
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Atomically write ``data`` to ``path``."""
    with replacing(path) as handle:
        handle.write(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Atomically write ``text`` (UTF-8) to ``path``."""
    write_bytes(path, text.encode("utf-8"))


def write_json(
    path: str | os.PathLike,
    payload: Any,
    *,
    default: Callable[[Any], Any] | None = None,
    indent: int | None = 2,
) -> None:
    """Atomically write ``payload`` as JSON (``default`` converts what JSON cannot hold).

    The text is made before the file is touched, so a value JSON cannot hold leaves no trace.
    """
    write_text(path, json.dumps(payload, indent=indent, default=default) + "\n")


def save_torch(path: str | os.PathLike, obj: Any) -> None:
    """Atomically ``torch.save`` ``obj`` to ``path``."""
    import torch

    with replacing(path) as handle:
        torch.save(obj, handle)


def save_npz(path: str | os.PathLike, arrays: dict[str, Any]) -> None:
    """Atomically write ``arrays`` as an uncompressed ``.npz`` archive (``numpy.savez``)."""
    import numpy as np

    with replacing(path) as handle:
        np.savez(handle, **arrays)


def save_figure(fig: Any, path: str | os.PathLike, **savefig: Any) -> Path:
    """Atomically save a matplotlib figure; the format comes from the suffix (``.png``, ``.pdf``).

    ``savefig`` goes to ``Figure.savefig`` (``dpi``, ``bbox_inches``, ...). Returns ``path``.
    """
    path = Path(path)
    savefig.setdefault("format", path.suffix.lstrip(".").lower() or "png")
    with replacing(path) as handle:
        fig.savefig(handle, **savefig)
    return path


def _create_temporary(path: Path) -> tuple[Path, int]:
    # A fresh hidden name next to the destination (same file system: os.replace stays a rename).
    # O_EXCL: never reuse a file another writer (a parallel study job) is filling.
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return tmp, os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_BINARY, 0o666)
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file next to {path}")



def _fsync_folder(folder: Path) -> None:
    # Make the rename itself durable (POSIX); folders cannot be opened this way on Windows.
    if not hasattr(os, "O_DIRECTORY"):
        return
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems do not sync folders; the file itself is already on disk
    finally:
        os.close(fd)
