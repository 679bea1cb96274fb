"""The destination-side disk helper: ``python -m labmig.remote.agent --image-dir DIR ...``.

It reads frames (see :mod:`labmig.remote.protocol`) on stdin and answers on stdout,
one request at a time, until ``bye`` or end of input. Every path in a request goes
through :class:`~labmig.remote.paths.ImagePolicy`, which holds each image directory
open: files are reached relative to that directory fd, opened with ``O_NOFOLLOW`` and
must be regular files with one link (checked with ``fstat`` after the open).
Operations:

    hello                       version, image dirs, free bytes, the kernel's boot id
    stat path                   exists, size, allocated bytes, incomplete mark, device and inode
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
    verify path [algo]          digest of the whole file (xxh3-128 or sha256)
    finish path                 fsync, check the name still holds the open file, then
                                drop the incomplete mark
    close path                  forget the open file
    remove path                 unlink a disk (confirm --delete-source-disks)
    token action path [name]    a token file next to ``path``: ``create`` (returns its
                                name and value), ``read``, ``remove``; the same-file test
                                of shared storage (labmig.cold.hostops)
    netdev name                 whether a network device exists in this host's namespace

Per file the order is enforced: ``open`` first; ``write``, ``zero`` and ``extents``
only inside the size given at open and never after ``finish``; ``finish`` only when
nothing was written since the last ``written_digest`` or ``verify`` (a copy that
changed nothing needs neither). A malformed or out-of-order request gets an error
reply and the helper stays up; only a stream cut in the middle of a frame ends it.

The requests mirror :class:`labmig.blockcopy.Destination` one-to-one (same incomplete
mark, same digest layout); the helper adds the path policy and the checks above.

It does not log: every failure goes back as an error reply, which the controller reports
(its start-up stays light: it starts for every disk of a cold migration).
"""
from __future__ import annotations

import argparse
import errno
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from .. import __version__
from ..copyrules import MAX_BLOCK, MIN_BLOCK, incomplete_mark
from ..errors import LabmigError
from .paths import ImagePolicy, Located, PathRefused, regular_file_problem
from .protocol import FrameRefused, ProtocolError, read_frame, unpack_extents, write_frame
from .samefile import boot_id, read_small_file

if TYPE_CHECKING:
    from ..blockio import WrittenRanges

READ_CHUNK = 4 << 20
MAX_OFFSET = 1 << 62          # no image size, offset or end beyond this (off_t is signed 64-bit)
MAX_SPAN = 1 << 30            # bytes one digests / zero request may cover (a window is 512 MiB)
TOKEN_PREFIX = ".labmig-token-"
_HINT = "both sides must run the same labmig"


class OutOfOrder(ProtocolError):
    """A request came before the one it needs (write before open, finish before a verify...)."""


def _int(req: dict[str, Any], key: str, lo: int, hi: int, default: int | None = None) -> int:
    """``req[key]`` as an int in [lo, hi], or a clear error (bools and floats are not ints here)."""
    value = req.get(key, default)
    if type(value) is not int:
        raise ProtocolError(f"{key} must be an integer, not {type(value).__name__}", _HINT)
    if not lo <= value <= hi:
        raise ProtocolError(f"{key} {value} is out of range [{lo}, {hi}]", _HINT)
    return value


def _block_size(req: dict[str, Any]) -> int:
    bs = _int(req, "block_size", MIN_BLOCK, MAX_BLOCK)
    if bs & (bs - 1):
        raise ProtocolError(f"block size {bs} is not a power of two", _HINT)
    return bs


def _seed(req: dict[str, Any]) -> int:
    return _int(req, "seed", 0, (1 << 64) - 1)


def _write_all(fd: int, view: memoryview, offset: int) -> None:
    while view:
        n = os.pwrite(fd, view, offset)
        if n <= 0:  # pwrite(2) writes at least one byte or fails; 0 would loop forever
            raise OSError(errno.EIO, "the file system accepted no bytes")
        view, offset = view[n:], offset + n


def _zero_range(fd: int, offset: int, length: int) -> None:
    """Make [offset, offset+length) read as zeros: a hole, or zeros written where holes cannot be."""
    from .. import core

    if not core.punch_hole(fd, offset, length):
        zeros = memoryview(bytes(min(length, READ_CHUNK)))
        end = offset + length
        while offset < end:
            n = min(len(zeros), end - offset)
            _write_all(fd, zeros[:n], offset)
            offset += n


def _new_written_ranges() -> WrittenRanges:
    # The copy engine (numpy, the compiled core) loads with the first file opened,
    # not at start-up: a helper asked only hello, stat or remove answers at once.
    from ..blockio import WrittenRanges

    return WrittenRanges()


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


class OpenFile:
    """One image opened by ``open``, and where its copy stands.

    (Plain classes here and in .paths, not dataclasses: the helper starts for every
    disk of a cold migration, and the dataclasses module alone costs it ~12 ms.)
    """

    def __init__(self, at: Located, fd: int, size: int, written: WrittenRanges | None = None) -> None:
        self.at, self.fd = at, fd
        self.size = size                    # the size given at open: no write beyond it
        self.written = written
        self.unverified = False             # written since the last written_digest / verify
        self.finished = False

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self.at.close()


class Agent:
    """Serves one controller over a pair of byte streams."""

    def __init__(self, policy: ImagePolicy) -> None:
        self.policy = policy
        self.files: dict[Path, OpenFile] = {}

    # -- helpers ----------------------------------------------------------------
    def _file(self, req: dict[str, Any], op: str) -> OpenFile:
        key = self.policy.key(req.get("path"))
        f = self.files.get(key)
        if f is None:
            raise OutOfOrder(f"{op} of {req.get('path')!r} before it was opened", "send open first")
        return f

    def _writable(self, req: dict[str, Any], op: str, offset: int, length: int) -> OpenFile:
        f = self._file(req, op)
        if f.finished:
            raise OutOfOrder(f"{op} of {req.get('path')!r} after finish", "open it again to change it")
        if offset + length > f.size:
            raise ProtocolError(f"{op} of {length} bytes at byte {offset} lies past the end "
                                f"({f.size} bytes, the size given at open)", _HINT)
        return f

    def _close(self, key: Path) -> None:
        f = self.files.pop(key, None)
        if f is not None:
            f.close()

    def _mark_present(self, at: Located) -> bool:
        try:
            os.stat(incomplete_mark(at.name).name, dir_fd=at.dir_fd, follow_symlinks=False)
            return True
        except FileNotFoundError:
            return False

    # -- operations -------------------------------------------------------------
    def op_hello(self, req: dict[str, Any], data: bytes) -> tuple[dict[str, Any], bytes]:
        dirs = [str(d) for d in self.policy.image_dirs]
        return {"version": __version__, "pid": os.getpid(), "image_dirs": dirs, "boot_id": boot_id(),
                "free": {d: self.policy.free_bytes_fd(fd) for d, fd in zip(dirs, self.policy.dir_fds,
                                                                            strict=True)}}, b""

    def op_stat(self, req: dict[str, Any], data: bytes) -> tuple[dict[str, Any], bytes]:
        at = self.policy.locate(req.get("path"))
        try:
            free = self.policy.free_bytes_fd(at.dir_fd)
            try:
                st = os.stat(at.name, dir_fd=at.dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                return {"exists": False, "size": 0, "allocated": 0, "incomplete": False, "free": free}, b""
            return {"exists": True, "size": st.st_size, "allocated": st.st_blocks * 512,
                    "incomplete": self._mark_present(at), "free": free, "dev": st.st_dev, "ino": st.st_ino,
                    "nlink": st.st_nlink, "problem": regular_file_problem(st)}, b""
        finally:
            at.close()

    def op_open(self, req: dict[str, Any], data: bytes) -> tuple[dict[str, Any], bytes]:
        size = _int(req, "size", 0, MAX_OFFSET)
        key = self.policy.key(req.get("path"))
        self._close(key)
        at = self.policy.locate(req.get("path"))
        try:
            return self._open(req, at, size, key)
        except BaseException:
            f = self.files.pop(key, None)
            if f is not None:
                f.close()
            else:
                at.close()
            raise

    def _open(self, req: dict[str, Any], at: Located, size: int, key: Path) -> tuple[dict[str, Any], bytes]:
        name = req.get("path")
        try:
            before: os.stat_result | None = os.stat(at.name, dir_fd=at.dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            before = None
        if before is not None and (problem := regular_file_problem(before)):
            # Refused before open(2): opening a device or FIFO can itself have effects.
            raise PathRefused(f"{name!r} {problem}", "the helper writes only plain image files it owns")
        mark = incomplete_mark(at.name).name
        had_mark = self._mark_present(at)
        mfd = os.open(mark, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=at.dir_fd)
        try:
            os.fsync(mfd)
        finally:
            os.close(mfd)
        # The mark must be durable before the first byte changes: a crash from here on
        # leaves the image marked incomplete (its directory entry needs a directory fsync).
        os.fsync(at.dir_fd)
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK
        try:
            fd = os.open(at.name, flags, 0o600, dir_fd=at.dir_fd)
        except OSError as exc:
            if not had_mark:
                os.unlink(mark, dir_fd=at.dir_fd)
            if exc.errno == errno.ELOOP:  # O_NOFOLLOW met a symlink swapped in after the check
                raise PathRefused(f"{name!r} is a symlink", "replace the symlink by the file itself") from None
            raise LabmigError(f"cannot open {name!r}: {exc.strerror}",
                              "check the image directory's permissions and free space") from exc
        st = os.fstat(fd)
        problem = regular_file_problem(st)
        if problem:
            os.close(fd)
            if not had_mark:
                os.unlink(mark, dir_fd=at.dir_fd)
            raise PathRefused(f"{name!r} {problem}", "the helper writes only plain image files it owns")
        self.files[key] = OpenFile(at, fd, size, _new_written_ranges())
        old = st.st_size
        if old != size:
            os.ftruncate(fd, size)   # a grown tail reads as zeros; the digests that follow compare it
        os.fsync(at.dir_fd)
        return {"existed": before is not None, "old_size": old}, b""

    def op_digests(self, req: dict[str, Any], data: bytes) -> tuple[dict[str, Any], bytes]:
        import numpy as np

        from .. import core

        f = self._file(req, "digests")
        bs = _block_size(req)
        seed = _seed(req)
        size = os.fstat(f.fd).st_size
        offset = _int(req, "offset", 0, MAX_OFFSET, 0)
        length = _int(req, "length", 0, MAX_OFFSET, max(0, min(size - offset, MAX_SPAN)))
        length = max(0, min(length, size - offset))
        if length > MAX_SPAN:
            raise ProtocolError(f"digests of {length} bytes in one request (at most {MAX_SPAN})", _HINT)
        nblocks = (length + bs - 1) // bs
        out = np.zeros((nblocks, core.DIGEST_WORDS), dtype=np.uint64)
        if nblocks:
            core.digest_file(f.fd, offset, length, bs, seed, out)
        return {"nblocks": nblocks, "length": length}, out.astype("<u8", copy=False).tobytes()

    def _ranges(self, f: OpenFile) -> WrittenRanges:
        if f.written is None:
            f.written = _new_written_ranges()
        return f.written

    def op_write(self, req: dict[str, Any], data: bytes) -> tuple[dict[str, Any], bytes]:
        offset = _int(req, "offset", 0, MAX_OFFSET)
        f = self._writable(req, "write", offset, len(data))
        if data:
            self._ranges(f).add(offset, len(data))
            f.unverified = True
            _write_all(f.fd, memoryview(data), offset)
        return {"written": len(data)}, b""

    def op_zero(self, req: dict[str, Any], data: bytes) -> tuple[dict[str, Any], bytes]:
        offset = _int(req, "offset", 0, MAX_OFFSET)
        length = _int(req, "length", 0, MAX_SPAN)
        f = self._writable(req, "zero", offset, length)
        if length:
            self._ranges(f).add(offset, length, zeroed=True)
            f.unverified = True
            _zero_range(f.fd, offset, length)
        return {}, b""

    def op_extents(self, req: dict[str, Any], data: bytes) -> tuple[dict[str, Any], bytes]:
        unit = _int(req, "unit", 1, MAX_BLOCK)
        table_bytes = _int(req, "table", 0, len(data))
        if unit & (unit - 1):
            raise ProtocolError(f"extents request with unit {unit}, not a power of two", _HINT)
        f = self._writable(req, "extents", 0, 0)
        extents = unpack_extents(data[:table_bytes], unit, f.size)
        payload = memoryview(data)[table_bytes:]
        if sum(length for _, length, zero in extents if not zero) != len(payload):
            raise ProtocolError("extents request whose data does not add up to its table", _HINT)
        if any(zero and length > MAX_SPAN for _, length, zero in extents):
            raise ProtocolError(f"a zero extent larger than {MAX_SPAN} bytes", _HINT)
        written = self._ranges(f)
        if extents:
            f.unverified = True
        for offset, length, zero in extents:
            written.add(offset, length, zeroed=zero)
            if zero:
                _zero_range(f.fd, offset, length)
                continue
            _write_all(f.fd, payload[:length], offset)
            payload = payload[length:]
        return {"extents": len(extents)}, b""

    def op_written_digest(self, req: dict[str, Any], data: bytes) -> tuple[dict[str, Any], bytes]:
        f = self._file(req, "written_digest")
        bs, seed = _block_size(req), _seed(req)
        digest = self._ranges(f).digest(f.fd, bs, seed)
        f.unverified = False   # everything written was read back; the controller compares
        return {}, digest

    def op_verify(self, req: dict[str, Any], data: bytes) -> tuple[dict[str, Any], bytes]:
        from ..blockcopy import stream_digest

        f = self._file(req, "verify")
        algo = req.get("algo", "xxh3-128")
        if algo not in ("xxh3-128", "sha256"):
            raise ProtocolError(f"unknown digest {algo!r}", "use xxh3-128 or sha256")
        digest = stream_digest(f.fd, os.fstat(f.fd).st_size, algo)
        f.unverified = False
        if f.written is not None:
            f.written.clear()
        return {"digest": digest, "algo": algo}, b""

    def op_finish(self, req: dict[str, Any], data: bytes) -> tuple[dict[str, Any], bytes]:
        f = self._file(req, "finish")
        name = req.get("path")
        if f.unverified:
            raise OutOfOrder(f"finish of {name!r} with writes that were not verified",
                             "send written_digest or verify after the last write, then finish")
        os.fsync(f.fd)
        # The mark is dropped by name, so the name must still hold the file that was written
        # and verified through the fd: a rename over it, or a new link, would make another
        # file (or an outside one) complete.
        try:
            now = os.stat(f.at.name, dir_fd=f.at.dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            now = None
        st = os.fstat(f.fd)
        if now is None or not _same_file(now, st):
            raise PathRefused(f"{name!r} was replaced or removed while it was copied",
                              "nothing else may write the destination's image directory during a copy; copy again")
        problem = regular_file_problem(st)
        if problem or st.st_size != f.size:
            raise PathRefused(f"{name!r} changed while it was copied ({problem or 'its size changed'})",
                              "nothing else may write the destination's image directory during a copy; copy again")
        try:
            os.unlink(incomplete_mark(f.at.name).name, dir_fd=f.at.dir_fd)
        except FileNotFoundError:
            pass
        os.fsync(f.at.dir_fd)
        f.finished = True
        return {}, b""

    def op_close(self, req: dict[str, Any], data: bytes) -> tuple[dict[str, Any], bytes]:
        self._close(self.policy.key(req.get("path")))
        return {}, b""

    def op_remove(self, req: dict[str, Any], data: bytes) -> tuple[dict[str, Any], bytes]:
        self._close(self.policy.key(req.get("path")))
        at = self.policy.locate(req.get("path"))
        try:
            removed = False
            for name in (at.name, incomplete_mark(at.name).name):
                try:
                    # unlinkat removes the name in this directory only (never a symlink's target).
                    os.unlink(name, dir_fd=at.dir_fd)
                    removed = removed or name == at.name
                except FileNotFoundError:
                    pass
            os.fsync(at.dir_fd)
            return {"removed": removed}, b""
        finally:
            at.close()

    def op_token(self, req: dict[str, Any], data: bytes) -> tuple[dict[str, Any], bytes]:
        action = req.get("action")
        at = self.policy.locate(req.get("path"))
        try:
            if action == "create":
                token = os.urandom(16).hex()
                name = TOKEN_PREFIX + os.urandom(8).hex()
                fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
                             dir_fd=at.dir_fd)
                try:
                    _write_all(fd, memoryview(token.encode()), 0)
                    os.fsync(fd)
                finally:
                    os.close(fd)
                return {"name": name, "value": token}, b""
            token_name = req.get("name")
            if not (isinstance(token_name, str) and token_name.startswith(TOKEN_PREFIX)
                    and len(token_name) == len(TOKEN_PREFIX) + 16
                    and all(c in "0123456789abcdef" for c in token_name[len(TOKEN_PREFIX):])):
                raise PathRefused(f"{token_name!r} is not a token name", "send the name token create returned")
            if action == "read":
                return {"value": read_small_file(token_name, at.dir_fd)}, b""
            if action == "remove":
                try:
                    os.unlink(token_name, dir_fd=at.dir_fd)
                except FileNotFoundError:
                    pass
                return {}, b""
            raise ProtocolError(f"unknown token action {action!r}", "use create, read or remove")
        finally:
            at.close()

    def op_netdev(self, req: dict[str, Any], data: bytes) -> tuple[dict[str, Any], bytes]:
        name = req.get("name")
        if not isinstance(name, str) or not name or "/" in name or "\x00" in name or name.startswith("-") \
                or len(name) > 15:
            raise PathRefused(f"bad network device name {name!r}", "send an interface name like br0")
        try:
            import socket

            socket.if_nametoindex(name)
            return {"exists": True}, b""
        except OSError:
            return {"exists": False}, b""

    # -- loop -------------------------------------------------------------------
    def serve(self, inp: BinaryIO, out: BinaryIO) -> None:
        try:
            self._serve(inp, out)
        finally:
            for key in list(self.files):
                self._close(key)

    def _serve(self, inp: BinaryIO, out: BinaryIO) -> None:
        while True:
            try:
                frame = read_frame(inp, skip_bad=True)
            except FrameRefused as exc:  # the frame was read whole: the stream is still in step
                write_frame(out, {"ok": False, "error": exc.message, "hint": exc.hint, "kind": type(exc).__name__})
                continue
            if frame is None:
                break
            req, data, _ = frame
            op = req.get("op")
            op = op if isinstance(op, str) else ""
            if op == "bye":
                write_frame(out, {"ok": True})
                break
            handler = getattr(self, f"op_{op}", None) if op.isidentifier() else None
            try:
                if handler is None:
                    raise LabmigError(f"unknown operation {op[:64]!r}", _HINT)
                reply, payload = handler(req, data)
            except LabmigError as exc:
                write_frame(out, {"ok": False, "error": exc.message, "hint": exc.hint, "kind": type(exc).__name__})
                continue
            except Exception as exc:  # any request, however odd, gets an answer; the helper stays up
                write_frame(out, {"ok": False, "error": f"{op[:64]} failed: {exc}"[:2000], "kind": type(exc).__name__,
                                  "hint": "check the destination's image directory and free space"})
                continue
            write_frame(out, {"ok": True, **reply}, payload)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="labmig-agent", description=__doc__.splitlines()[0])
    parser.add_argument("--image-dir", action="append", required=True, help="a directory the helper may use")
    args = parser.parse_args(argv)
    try:
        policy = ImagePolicy(args.image_dir)
    except LabmigError as exc:
        print(f"labmig-agent: {exc}", file=sys.stderr)
        return 2
    try:
        Agent(policy).serve(sys.stdin.buffer, sys.stdout.buffer)
    except (ProtocolError, BrokenPipeError) as exc:
        # The stream was cut in the middle of a frame, or the controller is gone: nothing to answer.
        print(f"labmig-agent: {exc}", file=sys.stderr)
        return 2
    finally:
        policy.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
