"""Which paths the destination helper may touch, and how it reaches them.

    ImagePolicy     the helper's image directories, each opened once as a directory fd;
                    ``locate(name)`` turns a name sent by the controller into a
                    :class:`Located` (a directory fd inside an image directory and one
                    file name in it), or refuses it with :class:`PathRefused`
    Located         ``dir_fd`` + ``name``: every later system call on the file is made
                    relative to that fd (``os.open(name, ..., dir_fd=...)``, ``os.stat``,
                    ``os.unlink``), never through the path string again
    regular_file_problem(st)   why a stat result is not a file the helper may write, or None

A name is a file name relative to the first image directory, or an absolute path
under one of them. Refused: empty names, NUL bytes, ``.`` and ``..`` components,
components that look like options (``-x``), absolute paths outside every image
directory, directories. Sub-directories below an image directory are walked one
component at a time with ``O_NOFOLLOW | O_DIRECTORY`` relative to the previous
directory's fd, so a symlink anywhere below the image directory — planted before the
check or swapped in after it — is refused rather than followed: the path is never
resolved by the kernel from its string. The file itself is opened by the helper with
``O_NOFOLLOW`` and checked with ``fstat`` after the open (regular file, one link).
"""
from __future__ import annotations

import errno
import os
import stat as stat_mod
from pathlib import Path

from ..errors import InvalidInput


class PathRefused(InvalidInput):
    """The helper will not touch this path."""


MAX_NAME = 4096       # bytes of a path sent by the controller (PATH_MAX)
MAX_DEPTH = 16        # directories below an image directory
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def regular_file_problem(st: os.stat_result) -> str | None:
    """Why the file behind ``st`` may not be written by the helper, or None when it may."""
    if stat_mod.S_ISLNK(st.st_mode):
        return "is a symlink"
    if stat_mod.S_ISDIR(st.st_mode):
        return "is a directory"
    if not stat_mod.S_ISREG(st.st_mode):
        return "is not a regular file (a device, FIFO or socket)"
    if st.st_nlink != 1:
        # Another name of the same inode may lie outside the image directories.
        return f"has {st.st_nlink} hard links"
    return None


class Located:
    """A file name inside one directory fd of an image directory (see the module docstring)."""

    def __init__(self, dir_fd: int, name: str, path: Path, owned: bool) -> None:
        self.dir_fd = dir_fd     # the directory holding the file (the image directory's own fd, or a walked one)
        self.name = name         # one path component
        self.path = path         # the path it stands for, for messages and as a key
        self.owned = owned       # dir_fd was opened for this name (a sub-directory) and must be closed

    def __repr__(self) -> str:
        return f"Located({self.path})"

    def close(self) -> None:
        if self.owned and self.dir_fd >= 0:
            os.close(self.dir_fd)
            self.dir_fd = -1


class ImagePolicy:
    """The image directories a helper may read and write under, each held open as a directory fd."""

    def __init__(self, image_dirs: list[str | os.PathLike[str]]) -> None:
        if not image_dirs:
            raise InvalidInput("the helper needs at least one image directory",
                               "pass --image-dir DIR (the host's image directory)")
        dirs: list[Path] = []
        given: list[str] = []
        fds: list[int] = []
        for d in image_dirs:
            real = Path(os.path.realpath(d))
            try:
                # The directory is resolved once, here; every later lookup is relative to this fd.
                fds.append(os.open(real, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
            except OSError:
                for fd in fds:
                    os.close(fd)
                raise InvalidInput(f"image directory {str(d)!r} does not exist",
                                   "create it, or fix the host's image_dir setting") from None
            dirs.append(real)
            given.append(os.path.normpath(os.fspath(d)))
        self.image_dirs = dirs
        self._given = given
        self.dir_fds = fds

    def close(self) -> None:
        for fd in self.dir_fds:
            os.close(fd)
        self.dir_fds = []

    def split(self, name: object) -> tuple[int, list[str]]:
        """(index of the image directory, components below it) for ``name``; no file-system access."""
        if not isinstance(name, str) or not name:
            raise PathRefused("empty path", "send a file name inside an image directory")
        if "\x00" in name:
            raise PathRefused(f"path {name!r} contains a NUL byte", "send a plain file name")
        if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME:
            raise PathRefused(f"path of {len(name)} characters is too long", "send a shorter path")
        parts = [p for p in name.split("/") if p]
        if not parts:
            raise PathRefused(f"path {name!r} names no file", "send a file name inside an image directory")
        for part in parts:
            if part in (".", ".."):
                raise PathRefused(f"path {name!r} contains {part!r}", "send a path without . or .. components")
        index = 0
        if name.startswith("/"):
            for i, (real, given) in enumerate(zip(self.image_dirs, self._given, strict=True)):
                prefixes = [[p for p in d.split("/") if p] for d in (str(real), given)]
                hit = next((len(pre) for pre in prefixes if len(parts) > len(pre) and parts[:len(pre)] == pre), None)
                if hit is not None:
                    index, parts = i, parts[hit:]
                    break
            else:
                raise PathRefused(f"path {name!r} is outside the image directories",
                                  "use a path under " + ", ".join(map(str, self.image_dirs)))
        for part in parts:
            if part.startswith("-"):
                raise PathRefused(f"path {name!r} has a component that looks like an option ({part!r})",
                                  "rename the file so no component starts with '-'")
        if len(parts) > MAX_DEPTH + 1:
            raise PathRefused(f"path {name!r} is {len(parts)} levels deep", "keep images near the image directory")
        return index, parts

    def key(self, name: object) -> Path:
        """The path ``name`` stands for (lexically; used to find an open file again)."""
        index, parts = self.split(name)
        return self.image_dirs[index].joinpath(*parts)

    def locate(self, name: object) -> Located:
        """The directory fd and file name for ``name``; the caller closes the result."""
        index, parts = self.split(name)
        fd = self.dir_fds[index]
        owned = False
        try:
            for i, part in enumerate(parts[:-1]):
                try:
                    # O_NOFOLLOW applies to the last component of what is opened, and here that
                    # is the only one (openat relative to fd): a symlink gives ELOOP, a file ENOTDIR.
                    new = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise PathRefused(f"path {name!r} passes through {'/'.join(parts[:i + 1])!r}, "
                                          "which is not a directory (a symlink is not followed)",
                                          "keep images in real directories under the image directory") from None
                    if exc.errno == errno.ENOENT:
                        raise PathRefused(f"directory {'/'.join(parts[:i + 1])!r} of {name!r} does not exist",
                                          "create it first, or send a file name in the image directory") from None
                    raise
                if owned:
                    os.close(fd)
                fd, owned = new, True
        except BaseException:
            if owned:
                os.close(fd)
            raise
        located = Located(fd, parts[-1], self.image_dirs[index].joinpath(*parts), owned)
        try:
            st = os.stat(located.name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return located
        except OSError:
            located.close()
            raise
        if stat_mod.S_ISDIR(st.st_mode):
            located.close()
            raise PathRefused(f"path {name!r} is a directory", "send a file name, not a directory")
        return located

    def resolve(self, name: object) -> Path:
        """The path ``name`` stands for, after the checks of :meth:`locate` (symlinks refused)."""
        located = self.locate(name)
        try:
            st = os.stat(located.name, dir_fd=located.dir_fd, follow_symlinks=False)
            if stat_mod.S_ISLNK(st.st_mode):
                raise PathRefused(f"path {name!r} is a symlink", "replace the symlink by the file itself")
        except FileNotFoundError:
            pass
        finally:
            located.close()
        return located.path

    def free_bytes_fd(self, dir_fd: int) -> int:
        st = os.fstatvfs(dir_fd)
        return st.f_bavail * st.f_frsize

    def free_bytes(self, path: Path) -> int:
        st = os.statvfs(path if path.is_dir() else path.parent)
        return st.f_bavail * st.f_frsize
