"""The destination-side disk helper: ``python -m labmig.remote.agent --image-dir DIR ...``.

It reads frames (see :mod:`labmig.remote.protocol`) on stdin and answers on stdout,
one request at a time, until ``bye`` or end of input. Every path in a request goes
through :class:`~labmig.remote.paths.ImagePolicy` first; files are opened with
``O_NOFOLLOW``. Operations:

    hello                       version, image dirs, free bytes
    stat path                   exists, size, allocated bytes, incomplete mark
    open path size              create if missing, mark incomplete, set the size (old size back)
    digests path block_size seed [offset length]   per-block XXH3-128 (payload)
    write path offset + payload pwrite one extent
    extents path unit table + payload
                                many extents at once: the payload is an extent table
                                (protocol.pack_extents, ``table`` bytes) then the data
                                of the data extents in order; zero extents as ``zero``
    zero path offset length     deallocate (or write zeros where holes are not possible)
    written_digest path block_size seed
                                one digest of what was written or zeroed since open or
                                the last call, read back (blockcopy.WrittenRanges)
    finish path                 fsync, then drop the incomplete mark
    close path                  forget the open file
    verify path [algo]          digest of the whole file (xxh3-128 or sha256)
    remove path                 unlink a disk (confirm --delete-source-disks)
    netdev name                 whether a network device exists in this host's namespace

The requests mirror :class:`labmig.blockcopy.Destination` one-to-one (same incomplete
mark, same digest layout); the helper adds the path policy and ``O_NOFOLLOW``.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from .. import __version__
from ..copyrules import incomplete_mark
from ..errors import LabmigError
from ..fsutil import fsync_dir
from .paths import ImagePolicy, PathRefused
from .protocol import ProtocolError, read_frame, unpack_extents, write_frame

if TYPE_CHECKING:
    from ..blockio import WrittenRanges

log = logging.getLogger(__name__)
READ_CHUNK = 4 << 20


def _write_all(fd: int, view: memoryview, offset: int) -> None:
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def _zero_range(fd: int, offset: int, length: int) -> None:
    """Make [offset, offset+length) read as zeros: a hole, or zeros written where holes cannot be."""
    from .. import core

    if not core.punch_hole(fd, offset, length):
        zeros = bytes(min(length, READ_CHUNK))
        end = offset + length
        while offset < end:
            offset += os.pwrite(fd, zeros[: end - offset], offset)


def _new_written_ranges() -> WrittenRanges:
    # The copy engine (numpy, the compiled core) loads with the first file opened,
    # not at start-up: a helper asked only hello, stat or remove answers at once.
    from ..blockio import WrittenRanges

    return WrittenRanges()


class Agent:
    """Serves one controller over a pair of byte streams."""

    def __init__(self, policy: ImagePolicy) -> None:
        self.policy = policy
        self.fds: dict[Path, int] = {}
        self.written: dict[Path, WrittenRanges] = {}

    # -- helpers ----------------------------------------------------------------
    def _fd(self, name: str, create: bool = False) -> tuple[Path, int]:
        path = self.policy.resolve(name)
        fd = self.fds.get(path)
        if fd is None:
            flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_CREAT if create else 0)
            try:
                fd = os.open(path, flags, 0o600)
            except FileNotFoundError as exc:
                raise LabmigError(f"{name!r} does not exist on the destination", "open it first") from exc
            except OSError as exc:
                raise LabmigError(f"cannot open {name!r}: {exc.strerror}",
                                  "check the image directory's permissions and free space") from exc
            self.fds[path] = fd
        return path, fd

    def _close(self, path: Path) -> None:
        fd = self.fds.pop(path, None)
        self.written.pop(path, None)
        if fd is not None:
            os.close(fd)

    # -- operations -------------------------------------------------------------
    def op_hello(self, req: dict[str, Any], data: bytes) -> tuple[dict[str, Any], bytes]:
        dirs = [str(d) for d in self.policy.image_dirs]
        return {"version": __version__, "pid": os.getpid(), "image_dirs": dirs,
                "free": {d: self.policy.free_bytes(Path(d)) for d in dirs}}, b""

    def op_stat(self, req: dict[str, Any], data: bytes) -> tuple[dict[str, Any], bytes]:
        path = self.policy.resolve(req["path"])
        try:
            st = os.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            return {"exists": False, "size": 0, "allocated": 0, "incomplete": False,
                    "free": self.policy.free_bytes(path.parent)}, b""
        return {"exists": True, "size": st.st_size, "allocated": st.st_blocks * 512,
                "incomplete": incomplete_mark(path).exists(), "free": self.policy.free_bytes(path.parent)}, b""

    def op_open(self, req: dict[str, Any], data: bytes) -> tuple[dict[str, Any], bytes]:
        size = int(req["size"])
        if size < 0:
            raise LabmigError(f"negative size {size}", "send the source's size")
        path = self.policy.resolve(req["path"])
        existed = path.exists()
        mark = incomplete_mark(path)
        fd = os.open(mark, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        os.fsync(fd)
        os.close(fd)
        _, fd = self._fd(req["path"], create=True)
        self.written[path] = _new_written_ranges()
        old = os.fstat(fd).st_size
        if old != size:
            os.ftruncate(fd, size)
        fsync_dir(path.parent)
        return {"existed": existed, "old_size": old}, b""

    def op_digests(self, req: dict[str, Any], data: bytes) -> tuple[dict[str, Any], bytes]:
        import numpy as np

        from .. import core

        _, fd = self._fd(req["path"])
        bs = int(req["block_size"])
        offset = int(req.get("offset", 0))
        size = os.fstat(fd).st_size
        length = int(req.get("length", size - offset))
        length = max(0, min(length, size - offset))
        nblocks = (length + bs - 1) // bs
        out = np.zeros((nblocks, core.DIGEST_WORDS), dtype=np.uint64)
        if nblocks:
            core.digest_file(fd, offset, length, bs, int(req["seed"]), out)
        return {"nblocks": nblocks, "length": length}, out.astype("<u8", copy=False).tobytes()

    def _written(self, path: Path) -> WrittenRanges:
        return self.written.setdefault(path, _new_written_ranges())

    def op_write(self, req: dict[str, Any], data: bytes) -> tuple[dict[str, Any], bytes]:
        path, fd = self._fd(req["path"])
        offset = int(req["offset"])
        self._written(path).add(offset, len(data))
        _write_all(fd, memoryview(data), offset)
        return {"written": len(data)}, b""

    def op_zero(self, req: dict[str, Any], data: bytes) -> tuple[dict[str, Any], bytes]:
        path, fd = self._fd(req["path"])
        offset, length = int(req["offset"]), int(req["length"])
        self._written(path).add(offset, length, zeroed=True)
        _zero_range(fd, offset, length)
        return {}, b""

    def op_extents(self, req: dict[str, Any], data: bytes) -> tuple[dict[str, Any], bytes]:
        path, fd = self._fd(req["path"])
        unit, table_bytes = int(req["unit"]), int(req["table"])
        if unit < 1 or not 0 <= table_bytes <= len(data):
            raise ProtocolError(f"extents request with unit {unit} and a table of {table_bytes} bytes "
                                f"in a payload of {len(data)}", "both sides must run the same labmig")
        extents = unpack_extents(data[:table_bytes], unit, os.fstat(fd).st_size)
        payload = memoryview(data)[table_bytes:]
        if sum(length for _, length, zero in extents if not zero) != len(payload):
            raise ProtocolError("extents request whose data does not add up to its table",
                                "both sides must run the same labmig")
        written = self._written(path)
        for offset, length, zero in extents:
            written.add(offset, length, zeroed=zero)
            if zero:
                _zero_range(fd, offset, length)
                continue
            _write_all(fd, payload[:length], offset)
            payload = payload[length:]
        return {"extents": len(extents)}, b""

    def op_written_digest(self, req: dict[str, Any], data: bytes) -> tuple[dict[str, Any], bytes]:
        path, fd = self._fd(req["path"])
        return {}, self._written(path).digest(fd, int(req["block_size"]), int(req["seed"]))

    def op_finish(self, req: dict[str, Any], data: bytes) -> tuple[dict[str, Any], bytes]:
        path, fd = self._fd(req["path"])
        os.fsync(fd)
        mark = incomplete_mark(path)
        if mark.exists():
            mark.unlink()
            fsync_dir(path.parent)
        return {}, b""

    def op_verify(self, req: dict[str, Any], data: bytes) -> tuple[dict[str, Any], bytes]:
        from ..blockcopy import stream_digest

        _, fd = self._fd(req["path"])
        algo = req.get("algo", "xxh3-128")
        return {"digest": stream_digest(fd, os.fstat(fd).st_size, algo), "algo": algo}, b""

    def op_close(self, req: dict[str, Any], data: bytes) -> tuple[dict[str, Any], bytes]:
        self._close(self.policy.resolve(req["path"]))
        return {}, b""

    def op_remove(self, req: dict[str, Any], data: bytes) -> tuple[dict[str, Any], bytes]:
        path = self.policy.resolve(req["path"])
        self._close(path)
        removed = False
        for p in (path, incomplete_mark(path)):
            try:
                p.unlink()
                removed = removed or p == path
            except FileNotFoundError:
                pass
        fsync_dir(path.parent)
        return {"removed": removed}, b""

    def op_netdev(self, req: dict[str, Any], data: bytes) -> tuple[dict[str, Any], bytes]:
        name = str(req["name"])
        if not name or "/" in name or name.startswith("-") or len(name) > 15:
            raise PathRefused(f"bad network device name {name!r}", "send an interface name like br0")
        try:
            import socket

            socket.if_nametoindex(name)
            return {"exists": True}, b""
        except OSError:
            return {"exists": False}, b""

    # -- loop -------------------------------------------------------------------
    def serve(self, inp: BinaryIO, out: BinaryIO) -> None:
        while True:
            frame = read_frame(inp)
            if frame is None:
                break
            req, data, _ = frame
            op = str(req.get("op", ""))
            if op == "bye":
                write_frame(out, {"ok": True})
                break
            handler = getattr(self, f"op_{op}", None)
            try:
                if handler is None:
                    raise LabmigError(f"unknown operation {op!r}", "both sides must run the same labmig")
                reply, payload = handler(req, data)
                write_frame(out, {"ok": True, **reply}, payload)
            except LabmigError as exc:
                write_frame(out, {"ok": False, "error": exc.message, "hint": exc.hint, "kind": type(exc).__name__})
            except (OSError, KeyError, ValueError, TypeError) as exc:
                log.debug("%s failed", op, exc_info=True)
                write_frame(out, {"ok": False, "error": f"{op} failed: {exc}", "kind": type(exc).__name__,
                                  "hint": "check the destination's image directory and free space"})
        for path in list(self.fds):
            self._close(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="labmig-agent", description=__doc__.splitlines()[0])
    parser.add_argument("--image-dir", action="append", required=True, help="a directory the helper may use")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    try:
        policy = ImagePolicy(args.image_dir)
    except LabmigError as exc:
        print(f"labmig-agent: {exc}", file=sys.stderr)
        return 2
    Agent(policy).serve(sys.stdin.buffer, sys.stdout.buffer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
