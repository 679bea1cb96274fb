"""The delta copy's fixed rules, importable without numpy or the compiled core.

    DIGEST_WORDS        a block digest is two uint64 words (XXH3-128: low, high)
    MIN_BLOCK, MAX_BLOCK, DEFAULT_BLOCK   block sizes: powers of two, 4 KiB .. 16 MiB, 64 KiB
    VERIFY_MODES        how a copy is verified: fast, full, sha256
    check_block_size    bytes from "64KiB" or 65536, or a clear error
    incomplete_mark     the sidecar file that marks an image as not yet verified

``labmig copy`` parses its arguments with these alone, so ``labmig copy --help``
and a bad ``--block-size`` answer before the copy engine (and numpy) is loaded.
"""
from __future__ import annotations

import os
from pathlib import Path

from .errors import InvalidInput
from .units import parse_size

DIGEST_WORDS = 2
MIN_BLOCK, MAX_BLOCK = 4096, 16 << 20
DEFAULT_BLOCK = 64 << 10
VERIFY_MODES = ("fast", "full", "sha256")


def check_block_size(value: int | str) -> int:
    """Bytes from ``value`` ('64KiB', 65536); a power of two from 4 KiB to 16 MiB."""
    size = parse_size(value)
    if size < MIN_BLOCK or size > MAX_BLOCK or size & (size - 1):
        raise InvalidInput(f"block size {value!r} is not a power of two between 4 KiB and 16 MiB",
                           "use e.g. --block-size 64KiB (the default), 4KiB or 1MiB")
    return size


def incomplete_mark(path: str | os.PathLike[str]) -> Path:
    """The sidecar that says an image is being written and not yet verified."""
    p = Path(path)
    return p.with_name(f".{p.name}.incomplete")


def is_incomplete(path: str | os.PathLike[str]) -> bool:
    return incomplete_mark(path).exists()
