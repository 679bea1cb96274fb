"""``labmig copy SRC DST``: make DST byte-identical to SRC, sending only blocks that differ.

A thin layer over :func:`labmig.blockcopy.delta_copy`: argument parsing, the
progress bar on a terminal, and the ``--stats`` / ``--json`` reports. The copy
engine (and numpy under it) is imported only once the arguments are good, so
``--help`` and usage errors answer at once; tests/test_startup.py keeps it so.
"""
from __future__ import annotations

import argparse
import json
import sys

from ..copyrules import DEFAULT_BLOCK, VERIFY_MODES, check_block_size


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "copy", help="copy a disk image, sending only the blocks that differ, then verify it",
        description="Make DST byte-identical to SRC (a disk image file or block device). Only blocks whose "
                    "digests differ are written; DST is grown or shrunk to SRC's size, kept sparse, marked "
                    "incomplete until it verifies, and a rerun resumes an interrupted copy.")
    p.add_argument("src", metavar="SRC", help="source image (opened read-only)")
    p.add_argument("dst", metavar="DST", help="destination image (created if missing)")
    p.add_argument("--block-size", default="64KiB", type=_block_size,
                   help="compare and send in blocks of this size: a power of two from 4KiB to 16MiB (default 64KiB)")
    p.add_argument("--verify", choices=VERIFY_MODES, default="fast",
                   help="fast: read back every block sent and compare digests (default); "
                        "full: hash both whole images (XXH3-128); sha256: the same with SHA-256")
    p.add_argument("--stats", action="store_true", help="print an rsync-like summary")
    p.add_argument("--json", action="store_true", help="print the statistics as JSON")
    p.set_defaults(func=cmd_copy, block_size_default=DEFAULT_BLOCK)


def _block_size(text: str) -> int:
    try:
        return check_block_size(text)
    except Exception as exc:  # argparse turns this into a usage error naming the option
        raise argparse.ArgumentTypeError(str(exc)) from exc


def cmd_copy(args: argparse.Namespace) -> int:
    from ..blockcopy import delta_copy
    from ..progress import Progress
    from ..units import format_rate, format_size

    with Progress(0, label="copy", enabled=None if not args.json else False) as bar:
        def progress(done: int, total: int) -> None:
            bar.total = max(float(total), 1.0)
            bar.update(done)

        stats = delta_copy(args.src, args.dst, block_size=args.block_size, verify=args.verify, progress=progress)
    if args.json:
        json.dump(stats.to_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif args.stats:
        print(stats.summary())
    else:
        print(f"{args.dst}: {stats.blocks_sent + stats.blocks_zero} of {stats.blocks_total} blocks updated, "
              f"{format_size(stats.bytes_on_wire)} on the wire, {stats.seconds:.2f} s "
              f"({format_rate(stats.throughput)}), verified")
    return 0
