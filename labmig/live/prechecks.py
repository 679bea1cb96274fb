"""Pre-checks before a live migration: each says what it found in words a student can act on.

    Check            one verdict: name, ok (True / False / None = could not tell), message, hint
    PrecheckReport   all verdicts + what the migration needs: domain XML, disks, block or
                     shared, bytes to move; ``raise_if_failed()`` → PrecheckFailed
    run_prechecks()  the checks, in Nova's order: hosts differ, destination reachable,
                     VM exists and runs, no job running, not already on the destination,
                     CPU compatible (compareHypervisorCPU), memory, networks, storage
    guest_info()     what the domain XML says: disks, interfaces, CPU, emulator, machine
    SharedStorageProbe  Nova's test file: created through the destination's storage pool
                     in the disk's directory, looked for through the source's

Nothing here changes either host beyond the probe file, which is always removed.
"""
from __future__ import annotations

import logging
import os
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import escape

from ..errors import PrecheckFailed
from ..units import format_size
from .plan import LivePlan

log = logging.getLogger(__name__)

MEMORY_MARGIN = 32 * 2**20   # QEMU's own overhead on the destination, roughly


@dataclass
class Check:
    name: str
    ok: bool | None
    message: str
    hint: str | None = None

    def line(self) -> str:
        mark = {True: "ok  ", False: "FAIL", None: "??  "}[self.ok]
        return f"[{mark}] {self.name}: {self.message}"


@dataclass
class Disk:
    target: str          # vda
    path: str            # the image file on the source
    fmt: str             # qcow2 / raw
    capacity: int = 0
    allocation: int = 0
    shared: bool = False  # marked <shareable/> or read-only: never copied


@dataclass
class GuestInfo:
    xml: str
    memory: int
    disks: list[Disk]
    networks: list[tuple[str, str]]     # (type, name): ("network", "labnet") / ("bridge", "br0")
    cpu_xml: str | None
    emulator: str | None
    arch: str | None
    machine: str | None
    virt_type: str


@dataclass
class PrecheckReport:
    plan: LivePlan
    checks: list[Check] = field(default_factory=list)
    guest: GuestInfo | None = None
    block_migration: bool = False
    shared_storage_proven: bool = False   # the probe file showed the disks' directories shared
    local_dirs_proven: set[str] = field(default_factory=set)   # the probe showed these are not shared
    data_bytes: int = 0

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.ok is False]

    def add(self, check: Check) -> Check:
        log.info("pre-check %s", check.line())
        self.checks.append(check)
        return check

    def raise_if_failed(self) -> None:
        if not self.failed:
            return
        first = self.failed[0]
        lines = "\n".join("  " + c.line() for c in self.checks)
        raise PrecheckFailed(f"cannot live-migrate {self.plan.vm}: {first.message}\n{lines}",
                             first.hint)

    def to_list(self) -> list[dict[str, Any]]:
        return [{"name": c.name, "ok": c.ok, "message": c.message, "hint": c.hint} for c in self.checks]


def guest_info(xml: str) -> GuestInfo:
    root = ET.fromstring(xml)
    mem = root.find("memory")
    unit = (mem.get("unit") or "KiB") if mem is not None else "KiB"
    scale = {"KiB": 1024, "MiB": 2**20, "GiB": 2**30, "b": 1, "bytes": 1}.get(unit, 1024)
    memory = int(mem.text) * scale if mem is not None and mem.text else 0
    disks = []
    for disk in root.findall("./devices/disk"):
        if disk.get("device", "disk") != "disk" or disk.get("type") != "file":
            continue
        source, target = disk.find("source"), disk.find("target")
        driver = disk.find("driver")
        if source is None or target is None or not source.get("file"):
            continue
        shared = disk.find("shareable") is not None or disk.find("readonly") is not None
        disks.append(Disk(target=target.get("dev", "?"), path=source.get("file", ""),
                          fmt=(driver.get("type") if driver is not None else None) or "raw", shared=shared))
    networks = []
    for iface in root.findall("./devices/interface"):
        source = iface.find("source")
        kind = iface.get("type", "")
        if source is None:
            continue
        if kind == "network":
            networks.append(("network", source.get("network", "")))
        elif kind == "bridge":
            networks.append(("bridge", source.get("bridge", "")))
    cpu = root.find("cpu")
    os_type = root.find("./os/type")
    emulator = root.find("./devices/emulator")
    return GuestInfo(
        xml=xml, memory=memory, disks=disks, networks=networks,
        cpu_xml=ET.tostring(cpu, encoding="unicode") if cpu is not None and cpu.find("model") is not None else None,
        emulator=emulator.text if emulator is not None else None,
        arch=os_type.get("arch") if os_type is not None else None,
        machine=os_type.get("machine") if os_type is not None else None,
        virt_type=root.get("type", "qemu"),
    )


class SharedStorageProbe:
    """Is ``directory`` the same storage on both hosts? Nova's answer: write a file on one, look on the other.

    libvirt's storage API does both sides, so this works for remote hosts too:
    a transient directory pool on each host (or the pool already there), a
    volume created on the destination, looked up on the source, then deleted.
    """

    def __init__(self, source: Any, destination: Any) -> None:
        self.source = source          # labmig.hosts.Host
        self.destination = destination

    @staticmethod
    def pool_for(host: Any, directory: str, create: bool = True) -> tuple[Any | None, bool]:
        """(pool, made_by_us) for a directory on a host; (None, False) when the directory is not there."""
        import libvirt

        conn = host.connect()
        for pool in host.call("listing storage pools", conn.listAllStoragePools, 0):
            try:
                target = ET.fromstring(pool.XMLDesc(0)).findtext("./target/path")
            except libvirt.libvirtError:
                continue
            if target and os.path.normpath(target) == os.path.normpath(directory) and pool.isActive():
                return pool, False
        if not create:
            return None, False
        name = f"labmig-probe-{uuid.uuid4().hex[:8]}"
        xml = f"<pool type='dir'><name>{name}</name><target><path>{escape(directory)}</path></target></pool>"
        try:
            return host.call("opening a storage pool", conn.storagePoolCreateXML, xml, 0), True
        except libvirt.libvirtError as exc:
            log.debug("no pool for %s on %s: %s", directory, host.name, exc)
            return None, False

    def is_shared(self, directory: str) -> bool | None:
        """True/False, or None when the probe itself could not run."""
        import libvirt

        dst_pool, dst_ours = self.pool_for(self.destination, directory)
        if dst_pool is None:
            return False    # the directory does not even exist there
        src_pool, src_ours = self.pool_for(self.source, directory)
        volume = None
        try:
            name = f".labmig-shared-probe-{uuid.uuid4().hex}"
            vol_xml = (f"<volume><name>{name}</name><capacity>0</capacity>"
                       f"<target><format type='raw'/></target></volume>")
            volume = self.destination.call("creating the probe file", dst_pool.createXML, vol_xml, 0)
            if src_pool is None:
                return None
            self.source.call("refreshing a storage pool", src_pool.refresh, 0)
            try:
                src_pool.storageVolLookupByName(name)
                return True
            except libvirt.libvirtError:
                return False
        except libvirt.libvirtError as exc:
            log.warning("shared-storage probe failed: %s", exc)
            return None
        finally:
            if volume is not None:
                try:
                    volume.delete(0)
                except libvirt.libvirtError:
                    log.warning("could not remove the probe file in %s", directory)
            for pool, ours in ((dst_pool, dst_ours), (src_pool, src_ours)):
                if pool is not None and ours:
                    try:
                        pool.destroy()
                    except libvirt.libvirtError:
                        pass


def run_prechecks(plan: LivePlan, source: Any, destination: Any) -> PrecheckReport:
    """Run every check; stops early only where later checks cannot run. Changes nothing."""
    import libvirt

    from ..hosts import HostUnreachable

    report = PrecheckReport(plan)
    vm = plan.vm
    if source.uri == destination.uri:
        report.add(Check("hosts differ", False, f"source and destination are both {source.name} ({source.uri})",
                         "pick another destination with --to"))
        return report
    try:
        source.connect()
    except HostUnreachable as exc:
        report.add(Check("source reachable", False, exc.message, exc.hint))
        return report
    try:
        destination.connect()
        report.add(Check("destination reachable", True, f"{destination.name} answers at {destination.uri}"))
    except HostUnreachable as exc:
        report.add(Check("destination reachable", False, exc.message, exc.hint))
        return report
    if source.host_uuid() == destination.host_uuid():
        report.add(Check("hosts differ", False,
                         f"{source.name} and {destination.name} are the same libvirt host (same host UUID)",
                         "pick another destination with --to"))
        return report

    dom = source.domain(vm)
    if dom is None:
        elsewhere = destination.domain(vm)
        hint = (f"{vm} is on {destination.name} already; migrate it back with --to {source.name}"
                if elsewhere is not None else "`labmig status` lists the VMs on each host")
        report.add(Check("VM on source", False, f"unknown VM {vm!r} on {source.name}", hint))
        return report
    state, _reason = source.call("reading the VM state", dom.state)
    if state not in (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_PAUSED):
        report.add(Check("VM running", False, f"{vm} is not running on {source.name} (state {state})",
                         "live migration moves a running VM; start it, or use cold migration"))
        return report
    report.add(Check("VM running", True, f"{vm} runs on {source.name}"))
    job = source.call("reading the VM's job", dom.jobInfo)[0]
    if job != libvirt.VIR_DOMAIN_JOB_NONE:
        report.add(Check("no job running", False, f"{vm} is already migrating (or busy with another job)",
                         f"wait for it, or stop it with `labmig abort {vm}`"))
        return report
    report.add(Check("no job running", True, "no migration or other job in progress"))
    if destination.domain(vm) is not None:
        report.add(Check("destination free", False, f"a VM named {vm} is already defined on {destination.name}",
                         f"remove it there first (virsh -c {destination.uri} undefine {vm}) if it is a leftover"))
        return report

    if not _check_options(report, plan, source):
        return report
    guest = guest_info(source.call("reading the VM's XML", dom.XMLDesc, 0))
    report.guest = guest
    _check_cpu(report, destination, guest)
    _check_memory(report, destination, guest)
    _check_networks(report, destination, guest)
    _check_storage(report, plan, source, destination, dom, guest)
    report.data_bytes = guest.memory + (sum(d.capacity for d in guest.disks if not d.shared)
                                        if report.block_migration else 0)
    return report


# Options Debian 12's libvirt 9.0 refuses ("Unsupported compression method"); a newer
# libvirt is let through and, should it refuse too, the run rolls back with its words.
NEEDS_LIBVIRT = {"zlib": 9_001_000, "zstd": 9_001_000}


def _check_options(report: PrecheckReport, plan: LivePlan, source: Any) -> bool:
    method = plan.options.compression
    need = NEEDS_LIBVIRT.get(method or "")
    if need is None:
        return True
    have = source.call("reading the libvirt version", source.connect().getLibVersion)
    if have >= need:
        return True
    report.add(Check("options supported", False,
                     f"libvirt {_version(have)} on {source.name} does not know {method} compression "
                     "(newer libvirt releases do)",
                     "use --compression xbzrle (or mt), or plain --parallel-connections N"))
    return False


def _version(n: int) -> str:
    return f"{n // 1_000_000}.{n // 1000 % 1000}.{n % 1000}"


def _check_cpu(report: PrecheckReport, destination: Any, guest: GuestInfo) -> None:
    import libvirt

    if guest.cpu_xml is None:
        report.add(Check("CPU compatible", True, "the guest uses the hypervisor's default CPU model"))
        return
    conn = destination.connect()
    try:
        verdict = destination.call("comparing CPUs", conn.compareHypervisorCPU, guest.emulator, guest.arch,
                                   guest.machine, guest.virt_type, guest.cpu_xml, 0)
    except libvirt.libvirtError as exc:
        report.add(Check("CPU compatible", False, f"{destination.name} cannot provide the guest's CPU: "
                         f"{exc.get_error_message()}", "pick a CPU model both hosts support"))
        return
    if verdict in (libvirt.VIR_CPU_COMPARE_IDENTICAL, libvirt.VIR_CPU_COMPARE_SUPERSET):
        report.add(Check("CPU compatible", True, f"{destination.name}'s hypervisor can run the guest's CPU model"))
    else:
        report.add(Check("CPU compatible", False, f"{destination.name}'s hypervisor lacks features of the guest's CPU",
                         "pick an older CPU model for the guest, as Nova's cpu_models setting does"))


def _check_memory(report: PrecheckReport, destination: Any, guest: GuestInfo) -> None:
    conn = destination.connect()
    free = destination.call("reading free memory", conn.getFreeMemory)
    need = guest.memory + MEMORY_MARGIN
    ok = free >= need
    report.add(Check("memory on destination", ok,
                     f"{format_size(free)} free, the guest needs {format_size(need)}",
                     None if ok else "free memory on the destination or pick another host"))


def _check_networks(report: PrecheckReport, destination: Any, guest: GuestInfo) -> None:
    import libvirt

    conn = destination.connect()
    for kind, name in guest.networks:
        if kind == "network":
            try:
                net = destination.call("looking up a network", conn.networkLookupByName, name)
                ok = bool(net.isActive())
                msg = f"network {name!r} is {'active' if ok else 'defined but not started'} on {destination.name}"
            except libvirt.libvirtError:
                ok, msg = False, f"{destination.name} has no network named {name!r}"
            report.add(Check("networks", ok, msg, None if ok else
                             f"define and start network {name!r} on {destination.name} (virsh net-start)"))
        else:
            present = _bridge_present(destination, name)
            report.add(Check("networks", present,
                             f"bridge {name!r} {'exists' if present else 'is missing'} on {destination.name}"
                             if present is not None else f"could not tell whether {destination.name} has bridge {name!r}",
                             None if present is not False else f"create bridge {name!r} on {destination.name}"))
    if not guest.networks:
        report.add(Check("networks", True, "the guest has no network interfaces to carry over"))


def _bridge_present(host: Any, bridge: str) -> bool | None:
    """Ask the host's interface driver, then its node devices; None when neither can say."""
    import libvirt

    conn = host.connect()
    try:
        host.call("looking up an interface", conn.interfaceLookupByName, bridge)
        return True
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_INTERFACE:
            return False
    try:
        devices = host.call("listing network devices", conn.listAllDevices,
                            libvirt.VIR_CONNECT_LIST_NODE_DEVICES_CAP_NET)
    except libvirt.libvirtError:
        return None
    names = set()
    for dev in devices:
        try:
            names.add(ET.fromstring(dev.XMLDesc(0)).findtext("./capability/interface"))
        except libvirt.libvirtError:
            continue
    return bridge in names if names else None


def _check_storage(report: PrecheckReport, plan: LivePlan, source: Any, destination: Any,
                   dom: Any, guest: GuestInfo) -> None:
    import libvirt

    disks = [d for d in guest.disks if not d.shared]
    for disk in disks:
        try:
            disk.capacity, disk.allocation, _phys = source.call("reading disk sizes", dom.blockInfo, disk.path, 0)
        except libvirt.libvirtError:
            pass
    if not disks:
        report.block_migration = bool(plan.options.block_migration)
        report.add(Check("storage", True, "no local disks: only memory moves"))
        return
    probe = SharedStorageProbe(source, destination)
    verdicts = {os.path.dirname(d.path): probe.is_shared(os.path.dirname(d.path)) for d in disks}
    shared = all(v is True for v in verdicts.values())
    report.shared_storage_proven = shared
    report.local_dirs_proven = {d for d, v in verdicts.items() if v is False}
    unknown = [d for d, v in verdicts.items() if v is None]
    wanted = plan.options.block_migration
    where = ", ".join(sorted(verdicts))
    if wanted is None:
        if unknown:
            report.add(Check("storage", False, f"could not tell whether {where} is shared storage",
                             "say it: --block-migration (copy the disks) or --shared-storage"))
            return
        report.block_migration = not shared
        report.add(Check("storage", True, f"{where} is shared storage: disks stay, only memory moves" if shared
                         else f"{where} is local to {source.name}: the disks will be copied (block migration)"))
    elif wanted is False:
        report.block_migration = False
        ok = shared
        report.add(Check("storage", ok if not unknown else None,
                         f"{where} is shared with {destination.name}" if ok
                         else f"{where} is not shared storage on {destination.name}",
                         None if ok else "use --block-migration to copy the disks"))
    else:
        report.block_migration = True
        report.add(Check("storage", True, f"block migration asked: the disks in {where} will be copied"
                         + (" (they are shared storage: copying them is wasted work)" if shared else "")))
    if report.block_migration:
        need = sum(d.capacity for d in disks)
        free = _free_space(destination, os.path.dirname(disks[0].path))
        if free is None:
            report.add(Check("disk space on destination", False,
                             f"{os.path.dirname(disks[0].path)} does not exist on {destination.name}",
                             "create the directory there (same path as on the source), as Nova's instances_path"))
        else:
            ok = free >= need
            report.add(Check("disk space on destination", ok, f"{format_size(free)} free, the disks need {format_size(need)}",
                             None if ok else "free space on the destination"))


def _free_space(host: Any, directory: str) -> int | None:
    pool, ours = SharedStorageProbe.pool_for(host, directory)
    if pool is None:
        return None
    try:
        return int(pool.info()[3])
    finally:
        if ours:
            pool.destroy()

