"""``make demo``: live vs cold migration of one guest on the local lab, measured, in one table.

    main()   bring the local two-host lab up (root; installs what is missing), boot a
             small guest with a local disk on lab1, then ``labmig compare``: live to
             lab2, cold back to lab1 (confirmed), and print the table. When the lab
             cannot come up (not root, no packages, no namespaces …) it says why and
             prints the same table from the simulator for a guest of the same shape.

The lab stays up afterwards (``labmig lab down`` stops it); the demo's guest is removed.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from typing import TYPE_CHECKING

from .errors import LabmigError
from .units import parse_duration

if TYPE_CHECKING:
    from .compare import Comparison

log = logging.getLogger(__name__)

GUEST, INDEX = "demo1", 90
MiB = 1 << 20


def _duration(text: str) -> float:
    """argparse type: seconds from '2s' or '500ms'; a bad value is a usage error naming the flag's rule."""
    try:
        return parse_duration(text)
    except LabmigError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def on_lab(shutdown_timeout: float) -> "Comparison":
    from .cold.migration import ColdRunOptions
    from .cold.trials import make_guest
    from .compare import compare_on_hosts
    from .lab import LocalLab
    from .live.plan import LiveOptions

    if os.geteuid() != 0:
        raise PermissionError("the local lab needs root (network and mount namespaces, libvirtd)")
    lab = LocalLab()
    print(f"bringing the local lab {lab.name!r} up (two libvirt hosts in namespaces) …", flush=True)
    report = lab.up()
    print(f"  up in {report.seconds:.1f} s: " + ", ".join(f"{h} {u}" for h, u in report.uris.items()))
    print(f"booting guest {GUEST} on lab1 (128 MiB RAM, 16 MiB local disk with 8 MiB of data) …", flush=True)
    t = time.monotonic()
    guest = make_guest(lab, GUEST, INDEX)
    print(f"  ready in {time.monotonic() - t:.1f} s; boot counter on its disk: {guest.boot_counter('lab1')}")

    def on_event(ev: object) -> None:
        kind = getattr(ev, "kind", "")
        if kind in ("start", "switchover", "done", "rollback", "shut-down", "forced-off", "disk-copied", "guest-up"):
            print(f"  [{getattr(ev, 't', 0):6.2f}s] {kind}: {getattr(ev, 'message', '')}", flush=True)

    try:
        print("live migration lab1 → lab2, then cold migration lab2 → lab1 …", flush=True)
        comp = compare_on_hosts(GUEST, "lab1", "lab2", LiveOptions(), ColdRunOptions(shutdown_timeout=shutdown_timeout),
                                on_event=on_event)
        comp.note = (f"Boot counter on the guest's disk now {guest.boot_counter('lab1')} (was 1): the cold "
                     f"migration moved the disk and the guest booted from it.\n"
                     f"The lab stays up: `labmig lab down` stops it.")
    finally:
        lab.remove_guest(GUEST)
    return comp


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m labmig.demo", description=__doc__.splitlines()[0])
    ap.add_argument("--simulate", action="store_true", help="skip the lab, use the simulator")
    ap.add_argument("--shutdown-timeout", default=2.0, type=_duration,
                    help="cold: graceful power-off deadline (default 2s)")
    ap.add_argument("--json", action="store_true", help="print the comparison as JSON")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from .compare import compare_simulated

    comp: Comparison
    if args.simulate:
        comp = compare_simulated(note="Simulated on request (--simulate).")
    else:
        try:
            comp = on_lab(args.shutdown_timeout)
        except (LabmigError, PermissionError, ImportError, OSError) as exc:
            why = str(exc).splitlines()[0]
            print(f"\nthe local lab could not be used: {why}", file=sys.stderr)
            print("falling back to the simulator for a guest of the same shape.\n", file=sys.stderr)
            comp = compare_simulated(note=f"Simulator figures: the local lab could not be used ({why}).")
    if args.json:
        import json
        print(json.dumps(comp.to_dict(), indent=2))
    else:
        print()
        print(comp.render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
