"""Files written whole or not at all, with the permissions a plain ``open`` would give.

A temporary file is made beside its target under a name no other process can share (the
process id and random bytes), then renamed over the target: a reader sees the old file or
the new one, never half of either, and two writers never clobber each other's temporary.
Files and directories end with the mode ``0666``/``0777`` less the umask, as ``open`` and
``mkdir`` give them, however the library that wrote them made them (``tempfile`` and
safetensors write ``0600``).
"""

import os
import pathlib
import secrets


def umask() -> int:
    """The process's umask (read by setting it and setting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def share(path: pathlib.Path) -> None:
    """Give ``path`` (and, for a directory, everything under it) the default mode: ``0666``
    for files and ``0777`` for directories, less the umask."""
    mask = umask()
    paths = [path, *path.rglob("*")] if path.is_dir() else [path]
    for p in paths:
        os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~mask)


def temporary(path: pathlib.Path) -> pathlib.Path:
    """A name beside ``path`` for its temporary, unique to this call."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def write_bytes(path: pathlib.Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (a unique temporary, then a rename)."""
    tmp = temporary(path)
    try:
        with open(tmp, "xb") as f:  # "x": never another writer's file
            f.write(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: pathlib.Path, text: str) -> None:
    """:func:`write_bytes` of ``text`` in UTF-8."""
    write_bytes(path, text.encode())
