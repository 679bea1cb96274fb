"""Small file-system helpers shared by every module that writes files durably.

    fsync_dir(path)   make the entries of a directory durable (after a create, rename or unlink)
    name_to_file(name) / file_to_name(stem)   a name (a VM's) as a file name and back: every
                      byte outside [A-Za-z0-9._-] of its UTF-8 percent-encoded (%XX), so two
                      names never share a file ("web 1" is web%201, "web_1" stays web_1) and
                      no file name holds a "/" or a NUL (the VM locks and the cold journals)

A rename or a new file is only durable once its directory is synced too; the disk
copy (:mod:`labmig.blockio`), the remote disk helper (:mod:`labmig.remote.agent`) and
the cold-migration journal (:mod:`labmig.cold.journal`) all rely on this one function.
"""
from __future__ import annotations

import os
import re

_PLAIN = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")
_ESCAPE = re.compile(r"%([0-9A-F]{2})")


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """fsync the directory ``path`` (opened read-only, not inherited by child processes)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def name_to_file(name: str) -> str:
    """``name`` as a file name (without suffix); distinct names give distinct file names.

    Letters, digits, ``.``, ``_`` and ``-`` stay; every other byte of the UTF-8 encoding
    (``%`` and ``/`` included) becomes ``%XX``. Callers add a suffix, so ``.`` and ``..``
    never stand alone.
    """
    return "".join(chr(b) if b in _PLAIN else f"%{b:02X}"
                   for b in name.encode("utf-8", "surrogatepass"))


def file_to_name(stem: str) -> str:
    """The name :func:`name_to_file` turned into ``stem``."""
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), stem).encode("latin-1").decode("utf-8", "surrogatepass")
