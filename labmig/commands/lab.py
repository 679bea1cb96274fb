"""``labmig lab up|status|down|clean|guest|fault``: the local two-host lab.

Every subcommand takes ``--name`` (default: $LABMIG_LAB, else "labmig") so several
labs can run side by side; fault names come from :data:`labmig.lab.faults.FAULTS`.
"""
from __future__ import annotations

import argparse
import json

from ..units import format_duration, format_size, parse_duration, parse_rate, parse_size


def register(subparsers) -> None:
    p = subparsers.add_parser("lab", help="the local two-host libvirt lab (root)",
                              description="Bring up, inspect and tear down the two-host lab on this machine.")
    sub = p.add_subparsers(dest="lab_command", metavar="ACTION")
    sub.required = True

    def add(name: str, help: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help)
        sp.add_argument("--name", default=None, help="lab name (default: $LABMIG_LAB or 'labmig')")
        return sp

    up = add("up", "bring the lab up (installs what is missing, builds the guest, starts both hosts)")
    up.add_argument("--link-rate", default=None, help="limit the inter-host link, e.g. 32MiB/s (default: unlimited)")
    up.add_argument("--no-install", action="store_true", help="do not install missing Debian packages")
    up.add_argument("--json", action="store_true", help="print the report as JSON")
    up.set_defaults(func=cmd_up)

    st = add("status", "say what is up")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_status)

    add("down", "stop the lab's daemons and guests, remove its namespaces").set_defaults(func=cmd_down)
    add("clean", "down, plus remove everything of this lab a crashed run left").set_defaults(func=cmd_clean)

    link = add("link", "set or lift the inter-host bandwidth limit while the lab runs")
    link.add_argument("rate", help="e.g. 32MiB/s, 100Mbit/s, or 'none' to lift the limit")
    link.add_argument("--latency", default=None,
                      help="added one-way delay, e.g. 20ms (needs netem in the kernel; refused clearly without it)")
    link.set_defaults(func=cmd_link)

    guest = add("guest", "create and boot the lab guest on a host")
    guest.add_argument("--guest", default="guest1", help="domain name (default guest1)")
    guest.add_argument("--index", type=int, default=1, help="address index: 10.78.0.(10+N) (default 1)")
    guest.add_argument("--host", default="lab1")
    guest.add_argument("--memory", default="256MiB")
    guest.add_argument("--wss", default="64MiB", help="working-set size")
    guest.add_argument("--dirty-rate", default="0B/s", help="bytes dirtied per second, e.g. 20MiB/s")
    guest.add_argument("--disk", choices=("shared", "local"), default="shared")
    guest.add_argument("--remove", action="store_true", help="remove the guest (every host) instead")
    guest.set_defaults(func=cmd_guest)

    hs = add("host-setup", "configure THIS machine as a migration host (Vagrant pair, real servers)")
    hs.add_argument("--host", required=True, help="this host's lab name, e.g. lab1")
    hs.add_argument("--address", required=True, help="this host's address on the migration network")
    hs.add_argument("--bridge-interface", default=None, help="enslave this interface to the guest bridge br0")
    hs.add_argument("--bridge-address", default=None, help="address (ADDR/PREFIX) to put on br0")
    hs.set_defaults(func=cmd_host_setup)

    gx = add("guest-xml", "print the lab guest's domain XML for a real host (creates its disk)")
    gx.add_argument("--guest", default="guest1")
    gx.add_argument("--index", type=int, default=1)
    gx.add_argument("--memory", default="256MiB")
    gx.add_argument("--wss", default="64MiB")
    gx.add_argument("--dirty-rate", default="0B/s")
    gx.add_argument("--disk", choices=("shared", "local"), default="shared")
    gx.add_argument("--accel", choices=("kvm", "tcg"), default="kvm")
    gx.set_defaults(func=cmd_guest_xml)

    from ..lab.faults import FAULTS
    fault = add("fault", "inject a fault: " + ", ".join(FAULTS))
    fault.add_argument("fault", choices=list(FAULTS), metavar="FAULT")
    fault.add_argument("params", nargs="*", metavar="KEY=VALUE", help="e.g. host=lab2 domain=guest1 rate=4MiB/s")
    fault.set_defaults(func=cmd_fault)


def _lab(args):
    from ..lab import LocalLab
    return LocalLab(args.name)


def cmd_up(args) -> int:
    rate = None if args.link_rate in (None, "none") else parse_rate(args.link_rate)
    lab = _lab(args)
    report = lab.up(link_rate=rate, install=not args.no_install)
    if args.json:
        print(json.dumps(report.__dict__, indent=2))
        return 0
    print(f"lab {lab.name} {'was already up' if report.already_up else 'is up'} ({format_duration(report.seconds)})")
    for name, h in lab.hosts.items():
        print(f"  {name}: {h.uri}")
        print(f"        link address {h.address}, migration URI {h.migration_uri}")
        print(f"        local images {h.local_image_dir} (outside: {h.local_image_dir_outside})")
    print(f"  shared images: {lab.shared_image_dir} (same path on both hosts)")
    print(f"  client namespace: {lab.layout.client_netns} ({lab.layout.client_addr})")
    return 0


def cmd_status(args) -> int:
    status = _lab(args).status()
    if args.json:
        print(json.dumps(status, indent=2))
        return 0 if status["up"] else 1
    print(f"lab {status['lab']}: {'up' if status['up'] else 'not up'}")
    for name, h in status["hosts"].items():
        doms = ", ".join(f"{d} ({s})" for d, s in h["domains"].items()) or "no domains"
        print(f"  {name}: namespaces {'yes' if h['namespaces'] else 'no'}, libvirtd {h['libvirtd'] or '-'},"
              f" sshd {h['sshd'] or '-'}; {doms}")
    if status["link"]:
        rate = status["link"]["rate"]
        print(f"  link: {'up' if status['link']['up'] else 'CUT'}, "
              f"{'unlimited' if rate is None else format_size(rate) + '/s'}")
    if status["leftover_processes"]:
        print(f"  leftover processes: {status['leftover_processes']} (`labmig lab clean` removes them)")
    return 0 if status["up"] else 1


def cmd_down(args) -> int:
    for line in _lab(args).down():
        print(f"stopped/removed {line}")
    return 0


def cmd_clean(args) -> int:
    for line in _lab(args).clean():
        print(f"removed {line}")
    return 0


def cmd_link(args) -> int:
    lab = _lab(args)
    lab.require_up()
    latency = parse_duration(args.latency) if args.latency else None
    lab.shape_link(None if args.rate == "none" else parse_rate(args.rate), latency=latency)
    rate = lab.link_rate
    print(f"link: {'unlimited' if rate is None else format_size(rate) + '/s'}")
    return 0


def cmd_guest(args) -> int:
    from ..lab import GuestSpec
    lab = _lab(args)
    if args.remove:
        lab.remove_guest(args.guest)
        print(f"removed {args.guest}")
        return 0
    spec = GuestSpec(name=args.guest, index=args.index, memory=parse_size(args.memory), wss=parse_size(args.wss),
                     dirty_rate=int(parse_rate(args.dirty_rate)), disk=args.disk)
    g = lab.create_guest(spec, host=args.host)
    print(f"{g.name} running on {args.host}: address {g.address}, disk {g.disk}, "
          f"console {lab.host(args.host).console_path(g.name)}")
    return 0


def cmd_fault(args) -> int:
    from ..errors import InvalidInput
    from ..lab.faults import inject
    kwargs: dict = {}
    for item in args.params:
        if "=" not in item:
            raise InvalidInput(f"fault parameter {item!r} is not KEY=VALUE", hint="e.g. host=lab2")
        key, value = item.split("=", 1)
        if key == "rate":
            kwargs[key] = None if value == "none" else parse_rate(value)
        else:
            kwargs[key] = value
    print(json.dumps(inject(_lab(args), args.fault, **kwargs)))
    return 0


def cmd_host_setup(args) -> int:
    from ..lab.hostsetup import setup_host
    for line in setup_host(args.host, args.address, lab=args.name, bridge_interface=args.bridge_interface,
                           bridge_addr=args.bridge_address):
        print(line)
    return 0


def cmd_guest_xml(args) -> int:
    from ..lab import GuestSpec
    from ..lab.hostsetup import guest_xml
    spec = GuestSpec(name=args.guest, index=args.index, memory=parse_size(args.memory), wss=parse_size(args.wss),
                     dirty_rate=int(parse_rate(args.dirty_rate)), disk=args.disk)
    print(guest_xml(spec, lab=args.name, accel=args.accel), end="")
    return 0
