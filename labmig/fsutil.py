"""Small file-system helpers shared by every module that writes files durably.

    fsync_dir(path)   make the entries of a directory durable (after a create, rename or unlink)

A rename or a new file is only durable once its directory is synced too; the disk
copy (:mod:`labmig.blockio`), the remote disk helper (:mod:`labmig.remote.agent`) and
the cold-migration journal (:mod:`labmig.cold.journal`) all rely on this one function.
"""
from __future__ import annotations

import os


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """fsync the directory ``path`` (opened read-only, not inherited by child processes)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
