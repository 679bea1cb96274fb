"""Which paths the destination helper may touch.

:class:`ImagePolicy` holds the helper's image directories and turns a name sent by
the controller into a real path inside one of them, or refuses it with
:class:`PathRefused`. It refuses: empty names, NUL bytes, ``.`` and ``..``
components, components that look like options (``-x``), absolute paths outside
every image directory, and anything whose real path (symlinks resolved) lands
outside. The last component is additionally opened with ``O_NOFOLLOW`` by the
helper, so a symlink swapped in after the check is not followed either.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import InvalidInput


class PathRefused(InvalidInput):
    """The helper will not touch this path."""


class ImagePolicy:
    """The image directories a helper may read and write under."""

    def __init__(self, image_dirs: list[str | os.PathLike[str]]) -> None:
        if not image_dirs:
            raise InvalidInput("the helper needs at least one image directory",
                               "pass --image-dir DIR (the host's image directory)")
        dirs = []
        for d in image_dirs:
            real = Path(os.path.realpath(d))
            if not real.is_dir():
                raise InvalidInput(f"image directory {str(d)!r} does not exist",
                                   "create it, or fix the host's image_dir setting")
            dirs.append(real)
        self.image_dirs = dirs

    def resolve(self, name: str) -> Path:
        """The real path for ``name`` (absolute, or relative to the first image dir)."""
        if not isinstance(name, str) or not name:
            raise PathRefused("empty path", "send a file name inside an image directory")
        if "\x00" in name:
            raise PathRefused(f"path {name!r} contains a NUL byte", "send a plain file name")
        parts = [p for p in name.split("/") if p]
        if not parts:
            raise PathRefused(f"path {name!r} names no file", "send a file name inside an image directory")
        for part in parts:
            if part in (".", ".."):
                raise PathRefused(f"path {name!r} contains {part!r}", "send a path without . or .. components")
            if part.startswith("-"):
                raise PathRefused(f"path {name!r} has a component that looks like an option ({part!r})",
                                  "rename the file so no component starts with '-'")
        candidate = Path(name) if name.startswith("/") else self.image_dirs[0] / name
        # Resolve the parent strictly enough that every existing symlink is followed; the
        # file itself may not exist yet (a first copy creates it).
        parent = Path(os.path.realpath(candidate.parent))
        base = self._inside(parent)
        if base is None:
            raise PathRefused(f"path {name!r} is outside the image directories",
                              "use a path under " + ", ".join(map(str, self.image_dirs)))
        final = parent / candidate.name
        if final.is_symlink():
            target = Path(os.path.realpath(final))
            if self._inside(target.parent) is None or target == base:
                raise PathRefused(f"path {name!r} is a symlink that leaves the image directories",
                                  "replace the symlink by the file itself")
            final = target
        if final == base or final.is_dir():
            raise PathRefused(f"path {name!r} is a directory", "send a file name, not a directory")
        return final

    def _inside(self, real: Path) -> Path | None:
        for d in self.image_dirs:
            if real == d or d in real.parents:
                return d
        return None

    def free_bytes(self, path: Path) -> int:
        st = os.statvfs(path if path.is_dir() else path.parent)
        return st.f_bavail * st.f_frsize
