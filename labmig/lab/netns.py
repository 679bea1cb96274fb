"""Namespaces, links and bridges of the local lab, and running commands inside them.

    run()              run a command, raising LabError with its stderr on failure
    host_cmd()         the argv prefix that enters a host's network + mount + UTS namespaces
    create_namespaces()/destroy_namespaces()   the lab's namespaces (net via `ip netns`,
                       mount + UTS bound to files under the lab's runtime dir)
    build_network()    veth link between the hosts, a bridge per host, the client's switch
    shape_link()/link_rate()/set_link()        tc token-bucket shaping and link up/down
    lab_pids()         every process living in one of the lab's namespaces

Each host gets its own mount namespace in which per-host directories are bound
over /etc/libvirt, /var/lib/libvirt, /var/cache/libvirt, /var/log/libvirt,
/run/libvirt and /etc/hosts, and /sys is remounted for its network namespace;
so a stock libvirtd runs there with its default paths, unaware of the other host.
"""
from __future__ import annotations

import json
import logging
import os
import shlex
import subprocess
from pathlib import Path

from ..errors import LabError
from .layout import GUEST_PREFIX, PRIVATE_DIRS, RUN_PRIVATE_DIRS, HostLayout, LabLayout

log = logging.getLogger(__name__)

LINK_DEV = "link0"
BRIDGE = "br0"
SWITCH = "sw0"
LOCAL_DIR_SIZE = os.environ.get("LABMIG_LOCAL_DIR_SIZE", "1g")


def run(argv: list[str], check: bool = True, input: str | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess:
    log.debug("run %s", " ".join(argv))
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, input=input, timeout=timeout, check=False)
    except FileNotFoundError as exc:
        raise LabError(f"{argv[0]} not found",
                       hint="run `labmig lab up` as root; it installs the lab packages") from exc
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"{' '.join(argv[:6])} did not finish in {timeout:.0f} s") from exc
    if check and proc.returncode != 0:
        raise LabError(f"`{' '.join(argv)}` failed: {(proc.stderr or proc.stdout).strip()[-500:]}",
                       hint="`labmig lab clean` removes what a failed run left, then try again")
    return proc


def host_cmd(host: HostLayout) -> list[str]:
    """Prefix that runs a command as if on ``host`` (its network, mounts and hostname)."""
    return ["nsenter", f"--net={host.netns_path}", f"--mount={host.mnt_ns}", f"--uts={host.uts_ns}", "--"]


def is_mountpoint(path: Path) -> bool:
    target = str(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == target for line in f)


def _ns_inode(path: Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def host_ready(host: HostLayout) -> bool:
    return host.netns_path.exists() and is_mountpoint(host.mnt_ns) and is_mountpoint(host.uts_ns)


def _hosts_file(layout: LabLayout, host: HostLayout) -> Path:
    path = host.run_dir / "hosts"
    lines = ["127.0.0.1\tlocalhost", f"127.0.1.1\t{host.name}"]
    lines += [f"{h.link_addr}\t{h.name}" for h in layout.hosts]
    path.write_text("\n".join(lines) + "\n")
    return path


def create_namespaces(layout: LabLayout) -> None:
    """Network, mount and UTS namespaces for both hosts and the client's network namespace."""
    layout.ns_dir.mkdir(parents=True, exist_ok=True)
    if not is_mountpoint(layout.ns_dir):
        # Namespace files must live on a private mount, or each new mount namespace
        # would hold a copy of the others' bindings.
        run(["mount", "--bind", str(layout.ns_dir), str(layout.ns_dir)])
        run(["mount", "--make-private", str(layout.ns_dir)])
    for netns in [h.netns for h in layout.hosts] + [layout.client_netns]:
        if not (Path("/run/netns") / netns).exists():
            run(["ip", "netns", "add", netns])
        run(["ip", "-n", netns, "link", "set", "lo", "up"])
    for host in layout.hosts:
        if host_ready(host):
            continue
        for d in list(PRIVATE_DIRS) + list(RUN_PRIVATE_DIRS):
            base = host.run_dir if d in RUN_PRIVATE_DIRS else host.state_dir
            (base / d).mkdir(parents=True, exist_ok=True)
        for mountpoint in list(PRIVATE_DIRS.values()) + list(RUN_PRIVATE_DIRS.values()):
            Path(mountpoint).mkdir(parents=True, exist_ok=True)
        images = host.local_image_dir_outside
        images.mkdir(parents=True, exist_ok=True)
        if not is_mountpoint(images):
            # A size-limited file system, so "fill the destination's disk" is a real
            # ENOSPC without touching the machine's own disk.
            run(["mount", "-t", "tmpfs", "-o", f"size={LOCAL_DIR_SIZE},mode=0755", f"labmig-{host.netns}", str(images)])
        hosts_file = _hosts_file(layout, host)
        for f in (host.mnt_ns, host.uts_ns):
            f.touch()
        q = shlex.quote
        binds = [f"mount --rbind {q(str(host.state_dir / k))} {q(str(v))}" for k, v in PRIVATE_DIRS.items()]
        binds += [f"mount --bind {q(str(host.run_dir / k))} {q(str(v))}" for k, v in RUN_PRIVATE_DIRS.items()]
        script = "\n".join([
            "set -e",
            f"hostname {q(host.name)}",
            f"umount -l {q(str(layout.ns_dir))}",
            # /sys must show this network namespace's devices (libvirt reads bridges there).
            "umount -l /sys 2>/dev/null || true",
            "mount -t sysfs sysfs /sys",
            *binds,
            f"mount --bind {q(str(hosts_file))} /etc/hosts",
        ])
        run(["nsenter", f"--net={host.netns_path}", "--", "unshare", f"--mount={host.mnt_ns}",
             f"--uts={host.uts_ns}", "--propagation", "slave", "sh", "-c", script])


def _exists(netns: str, dev: str) -> bool:
    return run(["ip", "-n", netns, "link", "show", dev], check=False).returncode == 0


def build_network(layout: LabLayout) -> None:
    h1, h2 = layout.hosts
    if not _exists(h1.netns, LINK_DEV):
        run(["ip", "link", "add", LINK_DEV, "netns", h1.netns, "type", "veth",
             "peer", "name", LINK_DEV, "netns", h2.netns])
    for h in layout.hosts:
        run(["ip", "-n", h.netns, "addr", "replace", f"{h.link_addr}/24", "dev", LINK_DEV])
        run(["ip", "-n", h.netns, "link", "set", LINK_DEV, "up"])
    c = layout.client_netns
    if not _exists(c, SWITCH):
        run(["ip", "-n", c, "link", "add", SWITCH, "type", "bridge"])
    run(["ip", "-n", c, "addr", "replace", f"{layout.client_addr}/{GUEST_PREFIX}", "dev", SWITCH])
    run(["ip", "-n", c, "link", "set", SWITCH, "up"])
    for h in layout.hosts:
        port = f"up-{h.name}"
        if not _exists(h.netns, BRIDGE):
            run(["ip", "-n", h.netns, "link", "add", BRIDGE, "type", "bridge"])
        if not _exists(h.netns, "uplink"):
            run(["ip", "link", "add", "uplink", "netns", h.netns, "type", "veth", "peer", "name", port, "netns", c])
        run(["ip", "-n", h.netns, "link", "set", "uplink", "master", BRIDGE, "up"])
        run(["ip", "-n", h.netns, "addr", "replace", f"{h.bridge_addr}/{GUEST_PREFIX}", "dev", BRIDGE])
        run(["ip", "-n", h.netns, "link", "set", BRIDGE, "up"])
        run(["ip", "-n", c, "link", "set", port, "master", SWITCH, "up"])


def shape_link(layout: LabLayout, rate_bps: float | None, latency: float | None = None) -> None:
    """Limit the inter-host link to ``rate_bps`` bytes/s in each direction (None: unlimited).

    Token-bucket shaping only: netem (added latency) is not available on every
    kernel, so a latency request is refused with a clear error when it cannot be honoured.
    """
    if latency:
        probe = run(["tc", "-n", layout.hosts[0].netns, "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"],
                    check=False)
        if probe.returncode != 0:
            raise LabError("this kernel has no netem, so the link cannot add latency",
                           hint="leave the latency out; only the bandwidth limit (token bucket) is available here")
        run(["tc", "-n", layout.hosts[0].netns, "qdisc", "del", "dev", "lo", "root"], check=False)
    for h in layout.hosts:
        if rate_bps is None:
            if not latency:
                run(["tc", "-n", h.netns, "qdisc", "del", "dev", LINK_DEV, "root"], check=False)
                continue
            run(["tc", "-n", h.netns, "qdisc", "replace", "dev", LINK_DEV, "root",
                 "netem", "delay", f"{latency * 1000:.3f}ms"])
            continue
        rate = int(rate_bps)
        burst = max(64 * 1024, rate // 100)
        argv = ["tc", "-n", h.netns, "qdisc", "replace", "dev", LINK_DEV, "root", "handle", "1:",
                "tbf", "rate", f"{rate}bps", "burst", str(burst), "latency", "100ms"]
        run(argv)
        if latency:
            run(["tc", "-n", h.netns, "qdisc", "replace", "dev", LINK_DEV, "parent", "1:1", "handle", "10:",
                 "netem", "delay", f"{latency * 1000:.3f}ms"])


def link_rate(layout: LabLayout) -> int | None:
    """The token-bucket rate in force on the link (bytes/s), or None when unlimited."""
    out = run(["tc", "-n", layout.hosts[0].netns, "-j", "qdisc", "show", "dev", LINK_DEV], check=False).stdout
    try:
        for q in json.loads(out or "[]"):
            if q.get("kind") == "tbf":
                return int(q["options"]["rate"])
    except (ValueError, KeyError, TypeError):
        return None
    return None


def set_link(layout: LabLayout, up: bool) -> None:
    """Cut (``up=False``) or restore the inter-host link, on both ends."""
    for h in layout.hosts:
        run(["ip", "-n", h.netns, "link", "set", LINK_DEV, "up" if up else "down"])


def link_is_up(layout: LabLayout) -> bool:
    out = run(["ip", "-n", layout.hosts[0].netns, "-o", "link", "show", LINK_DEV], check=False).stdout
    return ",UP" in out or "<UP" in out


def lab_pids(layout: LabLayout) -> list[int]:
    """Processes in any of the lab's namespaces (network or mount), never our own."""
    inodes = {i for i in (
        [_ns_inode(h.netns_path) for h in layout.hosts] + [_ns_inode(Path("/run/netns") / layout.client_netns)]
        + [_ns_inode(h.mnt_ns) for h in layout.hosts if is_mountpoint(h.mnt_ns)]
    ) if i is not None}
    pids = []
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        for kind in ("net", "mnt"):
            try:
                if os.stat(f"/proc/{entry}/ns/{kind}").st_ino in inodes:
                    pids.append(int(entry))
                    break
            except OSError:
                break
    return pids


def destroy_namespaces(layout: LabLayout) -> list[str]:
    """Remove the lab's namespaces and their mounts. Returns what it removed."""
    removed = []
    for h in layout.hosts:
        for f in (h.mnt_ns, h.uts_ns):
            if is_mountpoint(f):
                run(["umount", "-l", str(f)], check=False)
                removed.append(f"mount {f}")
    for h in layout.hosts:
        if is_mountpoint(h.local_image_dir_outside):
            run(["umount", "-l", str(h.local_image_dir_outside)], check=False)
            removed.append(f"mount {h.local_image_dir_outside}")
    for netns in [h.netns for h in layout.hosts] + [layout.client_netns]:
        if (Path("/run/netns") / netns).exists():
            run(["ip", "netns", "del", netns], check=False)
            removed.append(f"netns {netns}")
    if is_mountpoint(layout.ns_dir):
        run(["umount", "-l", str(layout.ns_dir)], check=False)
        removed.append(f"mount {layout.ns_dir}")
    return removed
