"""The local lab's layout, as plain data: every name derives from the lab's name.

    LabLayout     the whole lab: its name, directories, link settings, the hosts
    HostLayout    one migration host: namespace names, addresses, paths inside and outside
    make_layout() the LabLayout of a lab name
    lab_name()    the lab name in force (argument, else $LABMIG_LAB, else "labmig")

A layout says where things are, not what a migration does: migration plans are views
of a MigrationSpec (labmig.spec).

Nothing here touches the system. Two labs with different names share no
namespace, directory, socket or daemon, so they can run side by side. Addresses
are private and exist only inside the lab's own network namespaces (each lab
has its own copies), so they never reach the machine's network.

Topology (inside namespaces):

    lab1 ── link0 10.77.0.1 ══ veth ══ 10.77.0.2 link0 ── lab2     migration, libvirt, ssh
    lab1 ── br0 ─ uplink ═╗           ╔═ uplink ─ br0 ── lab2     guest network 10.78.0.0/24
                          client: sw0 10.78.0.3 (the client that probes guests)
"""
from __future__ import annotations

import os
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InvalidInput

DEFAULT_LAB = "labmig"
HOST_NAMES = ("lab1", "lab2")
LINK_NET = "10.77.0"
GUEST_NET = "10.78.0"
GUEST_PREFIX = 24
CLIENT_ADDR = f"{GUEST_NET}.3"
GUEST_FIRST_HOST = 10
LIBVIRT_TCP_PORT = 16509
GUEST_UDP_PORT = 7777
HEARTBEAT_UDP_PORT = 7778
RUN_ROOT = Path(os.environ.get("LABMIG_RUN_DIR", "/run/labmig"))
STATE_ROOT = Path(os.environ.get("LABMIG_STATE_DIR", "/var/lib/labmig"))

# Directories each host gets privately, bind-mounted at the system paths libvirtd uses.
PRIVATE_DIRS = {
    "etc-libvirt": "/etc/libvirt",
    "lib-libvirt": "/var/lib/libvirt",
    "cache-libvirt": "/var/cache/libvirt",
    "log-libvirt": "/var/log/libvirt",
}
RUN_PRIVATE_DIRS = {"run-libvirt": "/run/libvirt"}
LOCAL_IMAGE_DIR = "/var/lib/libvirt/images"
CONSOLE_DIR = "/var/log/libvirt/console"

_NAME_RE = re.compile(r"^[a-z][a-z0-9]{0,11}$")


def lab_name(name: str | None = None) -> str:
    name = name or os.environ.get("LABMIG_LAB") or DEFAULT_LAB
    if not _NAME_RE.match(name):
        raise InvalidInput(f"lab name {name!r} is not usable",
                           hint="use 1-12 lower-case letters and digits, starting with a letter (e.g. 'labmig', 'ci')")
    return name


@dataclass(frozen=True)
class HostLayout:
    lab: str
    name: str                   # "lab1" / "lab2": the host's hostname inside the lab
    index: int                  # 1, 2
    run_dir: Path               # runtime files of this host (root-namespace path)
    state_dir: Path             # persistent files of this host (root-namespace path)
    netns: str                  # `ip netns` name
    link_addr: str              # address on the inter-host link
    bridge_addr: str            # this host's address on the guest network
    host_uuid: str

    @property
    def netns_path(self) -> Path:
        return Path("/run/netns") / self.netns

    @property
    def mnt_ns(self) -> Path:
        return self.run_dir.parent / "ns" / f"{self.name}.mnt"

    @property
    def uts_ns(self) -> Path:
        return self.run_dir.parent / "ns" / f"{self.name}.uts"

    @property
    def socket_outside(self) -> Path:
        """libvirtd's read-write socket, as seen from the root namespace."""
        return self.run_dir / "run-libvirt" / "libvirt-sock"

    @property
    def uri(self) -> str:
        """libvirt URI for libvirt-python / virsh from the root namespace."""
        return f"qemu+unix:///system?socket={self.socket_outside}"

    @property
    def migration_uri(self) -> str:
        """URI the *other* host's libvirtd uses to reach this one (peer-to-peer migration)."""
        return f"qemu+tcp://{self.link_addr}/system"

    @property
    def local_image_dir(self) -> str:
        """Image directory private to this host (same path inside every host)."""
        return LOCAL_IMAGE_DIR

    @property
    def local_image_dir_outside(self) -> Path:
        return self.outside(LOCAL_IMAGE_DIR)

    def outside(self, inside_path: str | Path) -> Path:
        """Where a path inside this host's mount namespace is, seen from the root namespace."""
        p = str(inside_path)
        for key, mountpoint in {**PRIVATE_DIRS, **RUN_PRIVATE_DIRS}.items():
            if p == mountpoint or p.startswith(mountpoint + "/"):
                base = self.run_dir if key in RUN_PRIVATE_DIRS else self.state_dir
                return base / key / p[len(mountpoint):].lstrip("/")
        return Path(p)

    def console_log(self, domain: str) -> str:
        return f"{CONSOLE_DIR}/{domain}.log"


@dataclass(frozen=True)
class LabLayout:
    name: str
    run_dir: Path
    state_dir: Path
    hosts: tuple[HostLayout, ...] = field(default_factory=tuple)
    client_netns: str = ""
    client_addr: str = CLIENT_ADDR

    @property
    def shared_dir(self) -> Path:
        """Shared image directory: the same path on both hosts (as an NFS mount would be)."""
        return self.state_dir / "shared"

    @property
    def boot_dir(self) -> Path:
        """Guest kernel + initramfs, the same path on both hosts."""
        return self.state_dir / "boot"

    @property
    def ssh_dir(self) -> Path:
        return self.state_dir / "ssh"

    @property
    def ns_dir(self) -> Path:
        return self.run_dir / "ns"

    def host(self, name: str) -> HostLayout:
        for h in self.hosts:
            if h.name == name:
                return h
        raise InvalidInput(f"no host {name!r} in lab {self.name!r}", hint=f"hosts are {', '.join(HOST_NAMES)}")

    def other(self, name: str) -> HostLayout:
        return next(h for h in self.hosts if h.name != self.host(name).name)

    def guest_addr(self, index: int) -> str:
        return f"{GUEST_NET}.{GUEST_FIRST_HOST + index}"


def make_layout(name: str | None = None) -> LabLayout:
    lab = lab_name(name)
    run_dir = RUN_ROOT / lab
    state_dir = STATE_ROOT / lab
    hosts = tuple(
        HostLayout(
            lab=lab, name=h, index=i, run_dir=run_dir / h, state_dir=state_dir / h,
            netns=f"{lab}-{h}", link_addr=f"{LINK_NET}.{i}", bridge_addr=f"{GUEST_NET}.{i}",
            host_uuid=str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{h}.{lab}.labmig")),
        )
        for i, h in enumerate(HOST_NAMES, start=1)
    )
    return LabLayout(name=lab, run_dir=run_dir, state_dir=state_dir, hosts=hosts, client_netns=f"{lab}-client")
