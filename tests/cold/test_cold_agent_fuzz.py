"""The disk helper under generated and mutated frames.

One real helper process on pipes gets more than 10,000 frames from a seeded generator:
requests of every operation with random and extreme arguments (wrong types, offsets
and sizes at the limits, names that leave the image directory, symlinks, hard links,
a FIFO), garbled and non-object headers, deep JSON, oversized headers and payloads,
random and mutated extent tables, interleaved with real copies (open, writes, a
read-back, verify, finish) of files the generator never names. Every so often a frame
is cut in the middle and the stream closed: the helper must then exit with status 2
and no traceback, and is started again.

Afterwards: the helper never crashed and still answers hello; nothing outside the
image directory changed (a sibling directory with files reached through symlinks and
a hard link, contents and mtimes compared); every real copy is complete and holds
exactly its data. The figures are printed (run with -s to see them).
"""
from __future__ import annotations

import json
import os
import random
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
import xxhash

from labmig.remote.protocol import MAX_HEADER, MAX_PAYLOAD, pack_extents, read_frame

pytestmark = pytest.mark.slow

SEED = 15
FRAMES = 10_000
BS = 4096

EXTREME_INTS: list[Any] = [0, 1, -1, 7, 4095, 4096, 65536, 1 << 24, (1 << 31) - 1, 1 << 32, (1 << 62) - 1,
                           1 << 62, (1 << 62) + 1, (1 << 63) - 1, 1 << 63, 1 << 64, -(1 << 63), 10 ** 30,
                           1.5, float("inf"), "12", "", None, True, False, [], {}, [1], {"a": 1}]
OPS = ["hello", "stat", "open", "digests", "write", "extents", "zero", "written_digest", "verify", "finish",
       "close", "remove", "token", "netdev", "nosuchop", "__init__", "_serve", "op_hello", ""]


class Helper:
    """One helper process on pipes; its stderr goes to a file, read when it exits."""

    def __init__(self, images: Path, logs: Path) -> None:
        self.images, self.logs = images, logs
        self.starts = 0
        self.proc: subprocess.Popen[bytes]
        self.err: Any = None
        self.start()

    def start(self) -> None:
        self.starts += 1
        self.err = open(self.logs / f"helper-{self.starts}.err", "w+b")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen([sys.executable, "-m", "labmig.remote.agent", "--image-dir", str(self.images)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err, bufsize=0)

    def send(self, raw: bytes) -> dict[str, Any] | None:
        """Send bytes making one whole frame; the reply header, or None when the helper is gone."""
        try:
            assert self.proc.stdin is not None and self.proc.stdout is not None
            self.proc.stdin.write(raw)
            frame = read_frame(self.proc.stdout)
        except (BrokenPipeError, OSError):
            return None
        except Exception:  # a reply that is not a frame
            return None
        return frame[0] if frame else None

    def stop(self) -> tuple[int, str]:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        code = self.proc.wait(timeout=30)
        self.err.seek(0)
        text = self.err.read().decode(errors="replace")
        self.err.close()
        return code, text


def frame(header: Any, payload: bytes = b"", declared: int | None = None) -> bytes:
    body = header if isinstance(header, bytes) else json.dumps(header).encode()
    if declared is None and payload and isinstance(header, dict):
        body = json.dumps({**header, "payload": len(payload)}).encode()
    return struct.pack(">I", len(body)) + body + payload


class Generator:
    def __init__(self, rng: random.Random, images: Path, outside: Path) -> None:
        self.rng = rng
        self.names: list[Any] = ["f0.img", "f1.img", "f2.img", "sub/f3.img", "link.img", "hl.img", "fifo.img",
                                 "dirlink/x.img", "sub", "../outside/a", "/etc/passwd", str(outside / "a"),
                                 str(images / "f0.img"), str(images) + "/../outside/a", "", "-rf", "a\x00b",
                                 "x" * 5000, "/", ".", "sub/../../outside/a", 7, None, ["f0.img"], {"p": 1},
                                 ".f0.img.incomplete", "sub/" * 20 + "z"]

    def value(self) -> Any:
        r = self.rng.random()
        if r < 0.5:
            return self.rng.choice(EXTREME_INTS)
        if r < 0.8:
            return self.rng.randrange(0, 1 << 20)
        return self.rng.randrange(-(1 << 70), 1 << 70)

    def small(self, hi: int = 1 << 20) -> int:
        return self.rng.randrange(0, hi)

    def request(self) -> tuple[dict[str, Any], bytes]:
        rng = self.rng
        op = rng.choice(OPS)
        req: dict[str, Any] = {"op": op}
        if rng.random() < 0.95:
            req["path"] = rng.choice(self.names)
        payload = b""
        if op == "open":
            req["size"] = self.small(1 << 18) if rng.random() < 0.7 else self.value()
        elif op in ("digests", "written_digest"):
            req["block_size"] = rng.choice([4096, 65536, 1 << 24]) if rng.random() < 0.6 else self.value()
            req["seed"] = self.small() if rng.random() < 0.7 else self.value()
            if op == "digests" and rng.random() < 0.5:
                req["offset"], req["length"] = self.value(), self.value()
        elif op == "write":
            req["offset"] = self.small(1 << 18) if rng.random() < 0.6 else self.value()
            payload = rng.randbytes(rng.choice([0, 1, 100, 4096, 20000]))
        elif op == "zero":
            req["offset"] = self.small(1 << 18) if rng.random() < 0.6 else self.value()
            req["length"] = self.small(1 << 18) if rng.random() < 0.6 else self.value()
        elif op == "extents":
            unit = rng.choice([1, 4096, 65536]) if rng.random() < 0.8 else self.value()
            req["unit"] = unit
            if rng.random() < 0.6 and isinstance(unit, int) and 0 < unit <= 65536:
                extents = []
                pos = 0
                for _ in range(rng.randrange(1, 6)):
                    pos += rng.randrange(0, 8) * unit
                    length = rng.randrange(1, 4) * unit
                    extents.append((pos, length, rng.random() < 0.3))
                    pos += length
                table = pack_extents(extents, unit)
                data = b"".join(rng.randbytes(n) for _, n, z in extents if not z)
                if rng.random() < 0.3 and table:    # a mutated table
                    i = rng.randrange(len(table))
                    table = table[:i] + bytes([rng.randrange(256)]) + table[i + 1:]
                payload = table + data
                req["table"] = len(table)
            else:
                payload = rng.randbytes(rng.randrange(0, 200))
                req["table"] = self.value()
        elif op == "verify":
            if rng.random() < 0.5:
                req["algo"] = rng.choice(["xxh3-128", "sha256", "md5", 1, None])
        elif op == "token":
            req["action"] = rng.choice(["create", "read", "remove", "explode", None])
            req["name"] = rng.choice([".labmig-token-0123456789abcdef", "../outside/a", "f0.img", None])
        elif op == "netdev":
            req["name"] = rng.choice(["lo", "eth0", "../x", "-x", "a" * 20, 5, None, ""])
        for _ in range(rng.choice([0, 0, 0, 1, 2])):      # extra or retyped keys
            req[rng.choice(["path", "size", "offset", "length", "block_size", "seed", "unit", "table", "x"])] = \
                self.value()
        return req, payload

    def garbled(self) -> bytes:
        rng = self.rng
        kind = rng.randrange(8)
        if kind == 0:   # a valid request with bytes flipped in its header
            req, payload = self.request()
            body = bytearray(json.dumps(req).encode())
            for _ in range(rng.randrange(1, 4)):
                body[rng.randrange(len(body))] = rng.randrange(256)
            return struct.pack(">I", len(body)) + bytes(body)      # its payload is dropped
        if kind == 1:
            depth = rng.choice([40, 1000, 100_000])
            return frame(b'{"op":"hello","x":' + b"[" * depth + b"]" * depth + b"}")
        if kind == 2:
            return frame(rng.choice([b"[]", b"1", b'"op"', b"null", b"true", b"{", b"", b"\xff\xfe", b"{}"]))
        if kind == 3:
            return frame({"op": "write", "path": "f0.img", "offset": 0, "payload": rng.choice(["7", -1, 1.5, [],
                                                                                                 None, True])})
        if kind == 4:
            return frame(b'{"op":"hello","n":1' + b"0" * rng.choice([10, 5000]) + b"}")
        if kind == 5:
            return frame(rng.randbytes(rng.randrange(1, 300)))
        if kind == 6:
            return frame({"op": rng.choice(OPS), "path": {"deep": [[[["x"]]]]}, "size": [1, 2]})
        return frame({"op": "hello", **{f"k{i}": i for i in range(rng.randrange(1, 2000))}})


def snapshot(d: Path) -> dict[str, Any]:
    out = {}
    for p in sorted(d.rglob("*")):
        st = p.lstat()
        content = os.readlink(p) if p.is_symlink() else (p.read_bytes() if p.is_file() else None)
        out[str(p.relative_to(d))] = (content, st.st_mtime_ns, st.st_size)
    return out


def test_the_helper_survives_generated_frames_and_writes_nowhere_else(tmp_path):
    started = time.monotonic()
    rng = random.Random(SEED)
    images, outside, logs = tmp_path / "images", tmp_path / "outside", tmp_path / "logs"
    for d in (images, outside, logs, images / "sub"):
        d.mkdir()
    (outside / "a").write_bytes(b"outside a" * 100)
    (outside / "hl").write_bytes(b"outside, hard-linked" * 100)
    (outside / "x.img").write_bytes(b"outside x")
    (outside / ".x.img.incomplete").write_bytes(b"")
    (images / "link.img").symlink_to(outside / "a")
    (images / "dirlink").symlink_to(outside)
    os.link(outside / "hl", images / "hl.img")
    os.mkfifo(images / "fifo.img")
    os.utime(outside, ns=(1, 1))
    before = snapshot(outside)

    gen = Generator(rng, images, outside)
    helper = Helper(images, logs)
    sent = errors = oks = crashes = clean_closes = copies = garbled = 0
    expected: dict[str, bytes] = {}

    def restart(expect_close: bool) -> None:
        nonlocal crashes, clean_closes
        code, err = helper.stop()
        if expect_close and code in (0, 2) and "Traceback" not in err:
            clean_closes += 1
        else:
            crashes += 1
            print(f"helper died: status {code}\n{err[-3000:]}")
        helper.start()

    def ask(raw: bytes) -> dict[str, Any] | None:
        nonlocal sent, errors, oks
        sent += 1
        reply = helper.send(raw)
        if reply is None:
            restart(expect_close=False)
        elif reply.get("ok"):
            oks += 1
        else:
            errors += 1
            assert reply.get("error") and "hint" in reply
        return reply

    def real_copy() -> None:
        nonlocal copies
        name = f"v{copies}.img"
        size = rng.randrange(0, 1 << 17)
        data = bytearray(size)
        assert ask(frame({"op": "open", "path": name, "size": size}))["ok"]
        for _ in range(rng.randrange(0, 4)):
            if size == 0:
                break
            off = rng.randrange(0, size)
            chunk = rng.randbytes(rng.randrange(1, min(size - off, 20000) + 1))
            data[off:off + len(chunk)] = chunk
            assert ask(frame({"op": "write", "path": name, "offset": off}, chunk))["ok"]
        if size >= 2 * BS and rng.random() < 0.5:
            start = rng.randrange(0, size // BS - 1) * BS
            extents = [(start, BS, True), (start + BS, BS, False)]
            chunk = rng.randbytes(BS)
            data[start:start + BS] = bytes(BS)
            data[start + BS:start + 2 * BS] = chunk
            table = pack_extents(extents, BS)
            assert ask(frame({"op": "extents", "path": name, "unit": BS, "table": len(table)}, table + chunk))["ok"]
        if rng.random() < 0.5:
            assert ask(frame({"op": "written_digest", "path": name, "block_size": BS, "seed": 3}))["ok"]
        else:
            reply = ask(frame({"op": "verify", "path": name}))
            assert reply["digest"] == xxhash.xxh3_128(bytes(data)).hexdigest()
        assert ask(frame({"op": "finish", "path": name}))["ok"]
        assert ask(frame({"op": "close", "path": name}))["ok"]
        expected[name] = bytes(data)
        copies += 1

    while sent < FRAMES:
        r = rng.random()
        if r < 0.02:
            real_copy()
        elif r < 0.12:
            garbled += 1
            ask(gen.garbled())
        elif r < 0.122:   # a frame cut in the middle, then the stream closed
            req, payload = gen.request()
            raw = frame(req, payload)
            helper.proc.stdin.write(raw[:rng.randrange(1, len(raw))])
            sent += 1
            restart(expect_close=True)
        else:
            ask(frame(*gen.request()))
    # rare and large: headers and payloads over the limits, read whole and refused
    for raw in (struct.pack(">I", MAX_HEADER + 1) + bytes(MAX_HEADER + 1),
                frame({"op": "write", "path": "f0.img", "offset": 0}, bytes(MAX_PAYLOAD + 1))):
        reply = ask(raw)
        assert reply is not None and reply["ok"] is False

    alive = ask(frame({"op": "hello"}))
    code, err = helper.stop()
    elapsed = time.monotonic() - started
    after = snapshot(outside)
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    wrong = []
    for name, data in expected.items():
        p = images / name
        if (images / f".{name}.incomplete").exists() or p.read_bytes() != data:
            wrong.append(name)
    print(f"\nfuzz: {sent} frames sent ({garbled} garbled, {copies} real copies), {oks} ok replies, "
          f"{errors} error replies, {clean_closes} streams cut and closed cleanly, {crashes} crashes, "
          f"{len(changed)} writes outside, {len(wrong)} copies wrong, {elapsed:.1f} s")
    assert alive is not None and alive["ok"]
    assert code == 0 and "Traceback" not in err
    assert crashes == 0
    assert changed == []
    assert wrong == []
    assert sent >= FRAMES and copies > 50


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as d:
        test_the_helper_survives_generated_frames_and_writes_nowhere_else(Path(d))
