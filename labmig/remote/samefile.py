"""Is the destination's file the source's own file? Shared storage seen from both hosts.

    same_file(agent, dst_path, source, src_path)
                    how the helper's ``dst_path`` was found to be the source's ``src_path``
                    ("same inode", "same directory and name"), or None when it is another file
    LocalView       the source as this process sees it (``os.stat``, reading a file), with
                    an optional mapping of the host's paths to where this process finds them
    HelperView      the source through a disk helper running there
    boot_id()       the running kernel's boot id
    read_small_file(name, dir_fd)   a token file's content, never through a symlink
                    (the helper reads its tokens with it too)

Two tests, because a host given by a URI may mount the same storage as the other:

- device and inode: compared only when both sides run on the same kernel (same boot
  id), where they name one file; from two machines they mean nothing;
- a token: the destination's helper writes a file of random content next to
  ``dst_path``, and the source looks for it next to ``src_path``. If it is there the
  two directories are one (a shared mount, whatever the paths), so the same name in
  them is the same file. The token is removed afterwards.

Used by the disk copy (a copy onto its own source is refused), the cold migration's
pre-checks (a disk the destination already sees is shared storage: not copied) and
``confirm --delete-source-disks`` (never delete a disk the destination runs from).
"""
from __future__ import annotations

import os
import stat as stat_mod
from typing import Any, Callable, Protocol

_BOOT_ID = "/proc/sys/kernel/random/boot_id"


def boot_id() -> str:
    """The running kernel's boot id ('' where the kernel does not say): one per boot, per machine."""
    try:
        with open(_BOOT_ID, encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return ""


class SourceView(Protocol):
    boot_id: str

    def identity(self, path: str) -> tuple[int, int] | None: ...

    def read_token(self, path: str, name: str) -> str | None: ...


def read_small_file(name: str, dir_fd: int | None = None) -> str | None:
    """The first 64 bytes of the regular file ``name`` (in ``dir_fd``), as text; None when
    there is none or it is not a regular file. Never follows a symlink, never blocks on a FIFO."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dir_fd)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        if not stat_mod.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.read(fd, 64).decode("ascii", "replace")
    finally:
        os.close(fd)


class LocalView:
    """The source's files as this process sees them; ``local_path`` maps a host path to ours."""

    def __init__(self, local_path: Callable[[str], str] | None = None) -> None:
        self.local_path = local_path or (lambda p: p)
        self.boot_id = boot_id()

    def identity(self, path: str) -> tuple[int, int] | None:
        try:
            st = os.stat(self.local_path(path))
        except OSError:
            return None
        return st.st_dev, st.st_ino

    def read_token(self, path: str, name: str) -> str | None:
        try:
            return read_small_file(os.path.join(os.path.dirname(self.local_path(path)), name))
        except OSError:    # a symlink, no permission: no token seen here
            return None


class HelperView:
    """The source's files through a disk helper running on the source host."""

    def __init__(self, agent: Any) -> None:
        self.agent = agent
        self.boot_id = str(agent.info.get("boot_id") or "")

    def identity(self, path: str) -> tuple[int, int] | None:
        st = self.agent.call("stat", path=path)[0]
        return (int(st["dev"]), int(st["ino"])) if st.get("exists") and "dev" in st else None

    def read_token(self, path: str, name: str) -> str | None:
        value = self.agent.call("token", action="read", path=path, name=name)[0].get("value")
        return None if value is None else str(value)


def same_file(agent: Any, dst_path: str, source: SourceView, src_path: str) -> str | None:
    """How the helper's ``dst_path`` is the source's ``src_path``, or None (see the module docstring)."""
    st = agent.call("stat", path=dst_path)[0]
    there = str(agent.info.get("boot_id") or "")
    if st.get("exists") and there and there == source.boot_id:
        ours = source.identity(src_path)
        if ours is not None and ours == (int(st["dev"]), int(st["ino"])):
            return "same inode"
    if os.path.basename(os.path.normpath(dst_path)) != os.path.basename(os.path.normpath(src_path)):
        return None   # other names are other files, even in one directory
    token = agent.call("token", action="create", path=dst_path)[0]
    try:
        if source.read_token(src_path, token["name"]) == token["value"]:
            return "same directory and name"
    finally:
        agent.call("token", action="remove", path=dst_path, name=token["name"])
    return None
