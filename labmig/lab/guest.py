"""The lab guest: its description, domain XML, disk, console log and control channel.

    GuestSpec        plain data: name, memory, workload (dirty rate, working set), disk placement
    domain_xml()     the libvirt domain for a spec (direct kernel boot, virtio disk + NIC, file serial)
    create_disk()    a raw disk whose first sector carries the guest's boot counter
    read_boot_counter()  the counter, read from the image file (proof of which disk booted)
    ConsoleLog       parsed serial console: ready marker, heartbeats, memory errors, panics
    netns_socket()   a UDP socket created inside a network namespace (for the control channel)
    control()        one request/answer with the guest's UDP service (RATE, WSS, STAT, PING)

The guest's workload (``labmig/guest/workload.c``) takes its settings from the
kernel command line and answers UDP on port 7777: ``RATE <bytes/s>`` changes the
dirty rate while it runs, ``WSS <bytes>`` the working set (up to the size set at
boot), ``STAT`` returns its counters, ``PING x`` echoes ``PONG x``. With each
console heartbeat it also sends ``HB <name> seq=N errors=E boot=B`` over UDP to the
client's address, port 7778 (:func:`heartbeat_socket` listens for them).
"""
from __future__ import annotations

import array
import ctypes
import os
import re
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

from ..errors import InvalidInput, LabError
from .layout import GUEST_PREFIX, GUEST_UDP_PORT, HEARTBEAT_UDP_PORT, LabLayout

DISK_MAGIC = b"LABMIGDK"
MiB = 1024 * 1024
DISK_PLACES = ("shared", "local")


@dataclass
class GuestSpec:
    """What to boot. Sizes in bytes, rates in bytes/s."""

    name: str = "guest1"
    index: int = 1                     # picks the fixed address 10.78.0.(10+index) and the MAC
    memory: int = 256 * MiB
    vcpus: int = 1
    dirty_rate: int = 0
    wss: int = 64 * MiB
    disk: str = "shared"               # "shared" (same path on both hosts) or "local" (the host's own dir)
    disk_size: int = 16 * MiB
    heartbeat_ms: int = 1000
    check_ms: int = 2000
    extra_cmdline: str = ""

    def validate(self) -> None:
        if not re.match(r"^[A-Za-z][A-Za-z0-9_-]{0,40}$", self.name):
            raise InvalidInput(f"guest name {self.name!r} is not usable",
                               hint="letters, digits, '-' and '_', starting with a letter")
        if not 1 <= self.index <= 200:
            raise InvalidInput(f"guest index {self.index} out of range", hint="use 1..200")
        if self.disk not in DISK_PLACES:
            raise InvalidInput(f"disk placement {self.disk!r} unknown", hint=f"use one of {', '.join(DISK_PLACES)}")
        if self.memory < 128 * MiB:
            raise InvalidInput("guest memory below 128 MiB", hint="the guest kernel needs at least 128MiB")
        if self.wss > self.memory - 96 * MiB:
            raise InvalidInput(f"working set {self.wss} does not fit in {self.memory} bytes of guest memory",
                               hint="keep the working set at least 96 MiB below the guest memory")
        if self.dirty_rate < 0 or self.wss < 0:
            raise InvalidInput("dirty rate and working set must not be negative")

    @property
    def mac(self) -> str:
        return f"52:54:00:4c:4d:{self.index:02x}"

    def address(self, layout: LabLayout) -> str:
        return layout.guest_addr(self.index)

    def cmdline(self, layout: LabLayout) -> str:
        parts = [
            "console=ttyS0", "quiet", "panic=0", "mitigations=off",
            f"labmig.name={self.name}", f"labmig.ip={self.address(layout)}/{GUEST_PREFIX}",
            f"labmig.dirty={int(self.dirty_rate)}", f"labmig.wss={int(self.wss)}",
            f"labmig.port={GUEST_UDP_PORT}", f"labmig.hb={self.heartbeat_ms}", f"labmig.check={self.check_ms}",
            f"labmig.hbto={layout.client_addr}:{HEARTBEAT_UDP_PORT}",
        ]
        if self.extra_cmdline:
            parts.append(self.extra_cmdline)
        return " ".join(parts)


def disk_path(layout: LabLayout, spec: GuestSpec) -> str:
    """The disk's path as the hosts see it."""
    if spec.disk == "shared":
        return str(layout.shared_dir / f"{spec.name}.img")
    return f"{layout.hosts[0].local_image_dir}/{spec.name}.img"


def supports_direct_io(directory: Path) -> bool:
    """Whether files in ``directory`` can be opened with O_DIRECT (tmpfs before Linux 6.6 cannot)."""
    probe = directory / f".labmig-odirect-{os.getpid()}"
    try:
        fd = os.open(probe, os.O_RDWR | os.O_CREAT | os.O_DIRECT, 0o600)
    except OSError:
        return False
    os.close(fd)
    probe.unlink(missing_ok=True)
    return True


def domain_xml(layout: LabLayout, spec: GuestSpec, disk: str, console_log: str, domain_type: str = "qemu",
               direct_io: bool = True) -> str:
    # cache='none' (O_DIRECT): the host page cache is bypassed, so a disk both hosts
    # open stays coherent across a live migration; where O_DIRECT is unavailable the
    # disk falls back to the default cache (fine for copy-storage and cold migration).
    driver = ("<driver name='qemu' type='raw' cache='none' io='native'/>" if direct_io
              else "<driver name='qemu' type='raw'/>")
    cpu = "\n  <cpu mode='host-passthrough'/>" if domain_type == "kvm" else ""
    return f"""<domain type='{domain_type}'>
  <name>{escape(spec.name)}</name>
  <memory unit='KiB'>{spec.memory // 1024}</memory>
  <vcpu>{spec.vcpus}</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{layout.boot_dir / 'vmlinuz'}</kernel>
    <initrd>{layout.boot_dir / 'initrd.img'}</initrd>
    <cmdline>{escape(spec.cmdline(layout))}</cmdline>
  </os>
  <features><acpi/></features>{cpu}
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      {driver}
      <source file='{escape(disk)}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <interface type='bridge'>
      <mac address='{spec.mac}'/>
      <source bridge='br0'/>
      <model type='virtio'/>
    </interface>
    <serial type='file'>
      <source path='{escape(console_log)}' append='on'/>
      <target port='0'/>
    </serial>
    <memballoon model='none'/>
  </devices>
</domain>
"""


def create_disk(path: Path, size: int, boot_count: int = 0) -> None:
    """A sparse raw disk with the boot-counter sector; never overwrites an existing file."""
    if size < 1 * MiB:
        raise InvalidInput(f"disk size {size} too small", hint="use at least 1MiB")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError as exc:
        raise LabError(f"disk {path} already exists", hint="remove the guest first (`LocalLab.remove_guest`)") from exc
    try:
        os.pwrite(fd, DISK_MAGIC + boot_count.to_bytes(8, "little"), 0)
        os.ftruncate(fd, size)
    finally:
        os.close(fd)


def read_boot_counter(path: Path) -> int:
    """How many times a guest booted from this disk image (0: never)."""
    with open(path, "rb") as f:
        head = f.read(16)
    if head[:8] != DISK_MAGIC:
        raise LabError(f"{path} is not a lab guest disk", hint="create it with create_disk()")
    return int.from_bytes(head[8:16], "little")


_KV = re.compile(r"(\w+)=(\S+)")


@dataclass
class ConsoleLog:
    """What a guest printed on its serial console (one host's log)."""

    text: str
    ready: list[dict[str, str]] = field(default_factory=list)
    heartbeats: list[dict[str, str]] = field(default_factory=list)
    memory_errors: list[str] = field(default_factory=list)
    panics: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str) -> "ConsoleLog":
        log = cls(text)
        for line in text.splitlines():
            line = line.strip("\r\x1b")
            if "LABMIG READY" in line:
                log.ready.append(dict(_KV.findall(line)))
            elif "LABMIG HB " in line:
                log.heartbeats.append(dict(_KV.findall(line)))
            elif "LABMIG MEMERR" in line:
                log.memory_errors.append(line[line.index("LABMIG"):])
            elif "Kernel panic" in line or "LABMIG WORKLOAD EXITED" in line:
                log.panics.append(line)
        return log

    @property
    def boot_count(self) -> int | None:
        return int(self.ready[-1]["boot"]) if self.ready else None

    @property
    def reported_errors(self) -> int:
        """The guest's own error counter in its last heartbeat (plus any errors printed after it)."""
        last = int(self.heartbeats[-1]["errors"]) if self.heartbeats else 0
        return max(last, len(self.memory_errors))


# --- a socket inside another network namespace --------------------------------------

_CLONE_NEWNET = 0x40000000


def netns_socket(netns_path: Path, family: int = socket.AF_INET, type: int = socket.SOCK_DGRAM) -> socket.socket:
    """A socket that lives in the network namespace at ``netns_path``.

    A short-lived child enters the namespace, makes the socket and hands the file
    descriptor back over a unix socket; the socket stays in that namespace.
    """
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(netns_path, os.O_RDONLY)
            if libc.setns(fd, _CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns")
            s = socket.socket(family, type)
            child.sendmsg([b"x"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [s.fileno()]))])
            code = 0
        finally:
            os._exit(code)
    child.close()
    try:
        msg, anc, _, _ = parent.recvmsg(1, socket.CMSG_SPACE(4))
    finally:
        parent.close()
        os.waitpid(pid, 0)
    if not anc:
        raise LabError(f"could not open a socket in {netns_path}", hint="is the lab up? `labmig lab status`")
    fd = array.array("i", anc[0][2][:4])[0]
    return socket.socket(fileno=fd)


def control(layout: LabLayout, address: str, command: str, timeout: float = 2.0, retries: int = 3) -> str:
    """Send one command to a guest's UDP service from the client namespace; return its answer."""
    sock = netns_socket(Path("/run/netns") / layout.client_netns)
    try:
        sock.settimeout(timeout / retries)
        for _ in range(retries):
            sock.sendto(command.encode(), (address, GUEST_UDP_PORT))
            try:
                data, _ = sock.recvfrom(1024)
                return data.decode(errors="replace")
            except socket.timeout:
                continue
    finally:
        sock.close()
    raise LabError(f"guest at {address} did not answer {command.split()[0]!r} within {timeout:.1f} s",
                   hint="is it running and booted? read its console log")


def heartbeat_socket(layout: LabLayout) -> socket.socket:
    """A UDP socket in the client namespace receiving the guests' network heartbeats."""
    sock = netns_socket(Path("/run/netns") / layout.client_netns)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((layout.client_addr, HEARTBEAT_UDP_PORT))
    return sock


def parse_stat(answer: str) -> dict[str, int | str]:
    out: dict[str, int | str] = {}
    for k, v in _KV.findall(answer):
        out[k] = int(v) if v.isdigit() else v
    return out


def wait_for(predicate, timeout: float, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)
