"""The two-host lab on one machine: bring up, use, tear down.

    LocalLab     one named lab: up() / down() / clean() / status(), hosts, link, guests
    LabHost      one host of it: libvirt URI and connection, addresses, directories, run()
    LabGuest     a guest created by the lab: address, disk, console, control, where it runs
    UpReport     what up() did and how long each step took

A LocalLab is built from a :class:`~labmig.lab.layout.LabLayout` (plain data) and makes
it real with :mod:`netns`, :mod:`libvirtd`, :mod:`sshd` and :mod:`guestbuild`.
Every step of ``up`` is idempotent, so running it twice is harmless; ``clean``
also removes what a crashed run left behind, and only for this lab's name.
"""
from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InvalidInput, LabError
from . import accel as accelmod
from . import guestbuild, libvirtd, netns, sshd
from .guest import (
    ConsoleLog,
    GuestSpec,
    control,
    create_disk,
    disk_path,
    domain_xml,
    parse_stat,
    read_boot_counter,
    supports_direct_io,
    wait_for,
)
from .layout import STATE_ROOT, HostLayout, LabLayout, make_layout

log = logging.getLogger(__name__)

HOST_PACKAGES_SCRIPT = Path(__file__).resolve().parent / "host-packages.sh"
QEMU_MIN_MAJOR = 8


@dataclass
class UpReport:
    lab: str
    seconds: float = 0.0
    steps: dict[str, float] = field(default_factory=dict)
    uris: dict[str, str] = field(default_factory=dict)
    already_up: bool = False
    accel: str = "tcg"


class LabHost:
    """One lab host as the other parts of labmig use it."""

    def __init__(self, lab: "LocalLab", layout: HostLayout) -> None:
        self.lab = lab
        self.layout = layout

    name = property(lambda self: self.layout.name)
    uri = property(lambda self: self.layout.uri, doc="libvirt URI usable from the root namespace")
    migration_uri = property(lambda self: self.layout.migration_uri,
                             doc="URI the other host's libvirtd reaches this one by")
    address = property(lambda self: self.layout.link_addr, doc="address on the inter-host link")
    local_image_dir = property(lambda self: self.layout.local_image_dir,
                               doc="this host's own image dir (path inside the host)")
    local_image_dir_outside = property(lambda self: self.layout.local_image_dir_outside)
    shared_image_dir = property(lambda self: self.lab.layout.shared_dir)

    def __repr__(self) -> str:
        return f"LabHost({self.name!r}, uri={self.uri!r})"

    def connect(self):
        """A new libvirt-python connection (close it when done)."""
        return libvirtd.connect(self.layout)

    def outside(self, inside_path: str | Path) -> Path:
        """Where a path as this host sees it lies in the root namespace."""
        return self.layout.outside(inside_path)

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` wrapped to run on this host (its network, mounts and hostname)."""
        return netns.host_cmd(self.layout) + list(argv)

    def run(self, argv: list[str], check: bool = True, timeout: float = 120, input: str | None = None):
        return netns.run(self.command(argv), check=check, timeout=timeout, input=input)

    def ssh_argv(self, to: str, *command: str) -> list[str]:
        """argv that, run on this host (see :meth:`command`), runs ``command`` on host ``to`` over ssh."""
        return sshd.ssh_argv(self.lab.layout, self.lab.layout.host(to), *command)

    def scp_argv(self, src: str, to: str, dst: str) -> list[str]:
        """argv that, run on this host, copies its file ``src`` to ``dst`` on host ``to``."""
        return ["scp", "-q", "-F", str(sshd.config_path(self.lab.layout)), src, f"{to}:{dst}"]

    def libvirtd_pid(self) -> int | None:
        return libvirtd.pid(self.layout)

    def sshd_pid(self) -> int | None:
        return sshd.pid(self.layout)

    def qemu_pid(self, domain: str) -> int | None:
        path = self.outside(f"/run/libvirt/qemu/{domain}.pid")
        try:
            pid = int(path.read_text().strip())
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError):
            return None

    def console_path(self, domain: str) -> Path:
        return self.outside(self.layout.console_log(domain))

    def domain_state(self, domain: str) -> str | None:
        """'running', 'paused', 'shut off' … or None when not defined here."""
        import libvirt
        conn = self.connect()
        try:
            dom = conn.lookupByName(domain)
            state = dom.state()[0]
        except libvirt.libvirtError:
            return None
        finally:
            conn.close()
        return {libvirt.VIR_DOMAIN_RUNNING: "running", libvirt.VIR_DOMAIN_PAUSED: "paused",
                libvirt.VIR_DOMAIN_SHUTOFF: "shut off", libvirt.VIR_DOMAIN_SHUTDOWN: "shutting down",
                libvirt.VIR_DOMAIN_CRASHED: "crashed"}.get(state, f"state {state}")


class LabGuest:
    """A guest the lab defined; works on whichever host runs it."""

    def __init__(self, lab: "LocalLab", spec: GuestSpec) -> None:
        self.lab = lab
        self.spec = spec

    name = property(lambda self: self.spec.name)

    def __repr__(self) -> str:
        return f"LabGuest({self.name!r}, address={self.address!r}, disk={self.disk!r})"

    @property
    def address(self) -> str:
        return self.spec.address(self.lab.layout)

    @property
    def disk(self) -> str:
        """Disk path as the hosts see it."""
        return disk_path(self.lab.layout, self.spec)

    def disk_outside(self, host: str) -> Path:
        return self.lab.host(host).outside(self.disk)

    def boot_counter(self, host: str = "lab1") -> int:
        """Boots recorded on the disk as ``host`` has it (shared disks: the same everywhere)."""
        return read_boot_counter(self.disk_outside(host))

    def where(self) -> dict[str, str]:
        """host name -> domain state, for hosts where the guest is defined."""
        out = {}
        for h in self.lab.hosts.values():
            state = h.domain_state(self.name)
            if state is not None:
                out[h.name] = state
        return out

    def running_on(self) -> str | None:
        running = [h for h, s in self.where().items() if s in ("running", "paused")]
        return running[0] if len(running) == 1 else None

    def console(self, host: str) -> ConsoleLog:
        path = self.lab.host(host).console_path(self.name)
        try:
            return ConsoleLog.parse(path.read_text(errors="replace"))
        except FileNotFoundError:
            return ConsoleLog.parse("")

    def wait_ready(self, host: str = "lab1", timeout: float = 60.0, after: int = 0) -> ConsoleLog:
        """Wait for the ready marker on ``host``'s console (more than ``after`` of them)."""
        got = wait_for(lambda: (c := self.console(host)).ready[after:] and c, timeout)
        if not got:
            tail = self.console(host).text[-600:]
            raise LabError(f"guest {self.name} printed no ready marker on {host} within {timeout:.0f} s",
                           hint=f"console tail:\n{tail}")
        return got

    def control(self, command: str, timeout: float = 2.0) -> str:
        return control(self.lab.layout, self.address, command, timeout=timeout)

    def stat(self) -> dict:
        """The guest's own counters: boot, hb, dirty, wss, errors, rounds, dirtied."""
        return parse_stat(self.control("STAT"))

    def set_dirty_rate(self, rate: int) -> None:
        """Change the dirty rate (bytes/s) while the guest runs."""
        answer = self.control(f"RATE {int(rate)}")
        if not answer.startswith("OK RATE"):
            raise LabError(f"guest {self.name} refused the rate change: {answer}")

    def set_working_set(self, size: int) -> int:
        answer = self.control(f"WSS {int(size)}")
        if not answer.startswith("OK WSS"):
            raise LabError(f"guest {self.name} refused the working-set change: {answer}")
        return int(answer.split()[-1])

    def start_probe(self, interval: float = 0.02):
        """A client in the client namespace pinging the guest every ``interval`` s; ``.stop()`` reports."""
        from .probe import Probe
        return Probe(self.lab.layout, self.address, interval=interval).start()


class LocalLab:
    """A two-host libvirt lab on this machine, named ``name`` (default: $LABMIG_LAB or "labmig")."""

    def __init__(self, name: str | None = None) -> None:
        self.layout: LabLayout = make_layout(name)
        self.hosts: dict[str, LabHost] = {h.name: LabHost(self, h) for h in self.layout.hosts}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LocalLab({self.name!r})"

    name = property(lambda self: self.layout.name)
    shared_image_dir = property(lambda self: self.layout.shared_dir, doc="same path on both hosts")
    client_netns = property(lambda self: Path("/run/netns") / self.layout.client_netns)

    def host(self, name: str) -> LabHost:
        self.layout.host(name)  # raises a clear error for unknown names
        return self.hosts[name]

    def other(self, name: str) -> LabHost:
        return self.hosts[self.layout.other(name).name]

    def __enter__(self) -> "LocalLab":
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    # --- lifecycle ---------------------------------------------------------------

    def up(self, link_rate: float | None = None, install: bool = True, build: bool = True) -> UpReport:
        """Bring the lab up (or finish bringing it up). ``link_rate`` in bytes/s, None: unlimited."""
        _require_root()
        report = UpReport(self.name)
        t0 = time.monotonic()

        def step(label: str, fn, *args):
            t = time.monotonic()
            value = fn(*args)
            report.steps[label] = round(time.monotonic() - t, 3)
            return value

        report.already_up = all(libvirtd.pid(h) and sshd.pid(h) for h in self.layout.hosts)
        if install:
            step("packages", self._install)
        step("qemu-check", _check_qemu)
        for d in (self.layout.state_dir, self.layout.shared_dir, self.layout.run_dir):
            d.mkdir(parents=True, exist_ok=True)
        with ThreadPoolExecutor(max_workers=2) as pool:
            built = pool.submit(_timed, guestbuild.build_guest) if build else None
            step("namespaces", netns.create_namespaces, self.layout)
            step("network", netns.build_network, self.layout)
            if link_rate is not None:
                step("shaping", netns.shape_link, self.layout, link_rate)
            step("ssh", self._start_sshd)
            step("libvirtd", self._start_daemons)
            warm = [pool.submit(_timed, libvirtd.warm, h) for h in self.layout.hosts]
            if built is not None:
                image, report.steps["guest-build"] = built.result()
                step("guest-image", self._install_boot_files, image)
                report.accel = step("accel", self._choose_accel, image)
            report.steps["warm"] = max(f.result()[1] for f in warm)
        report.uris = {h.name: h.uri for h in self.layout.hosts}
        report.seconds = round(time.monotonic() - t0, 3)
        (self.layout.run_dir / "up").write_text(f"{time.time()}\n")
        log.info("lab %s up in %.1f s: %s", self.name, report.seconds, report.steps)
        return report

    def _install(self) -> None:
        check = subprocess.run(["bash", str(HOST_PACKAGES_SCRIPT), "--check"], capture_output=True, text=True)
        if check.returncode == 0:
            return
        log.info("installing lab packages (%s)", check.stdout.strip())
        proc = subprocess.run(["bash", str(HOST_PACKAGES_SCRIPT)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise LabError(f"installing the lab's Debian packages failed: {proc.stderr.strip()[-600:]}",
                           hint="run `bash labmig/lab/host-packages.sh` as root to see the full output")

    def _start_sshd(self) -> None:
        sshd.ensure_keys(self.layout)
        for h in self.layout.hosts:
            sshd.start(self.layout, h)

    def _start_daemons(self) -> None:
        for h in self.layout.hosts:
            libvirtd.write_config(h)
            libvirtd.start(h)

    def _choose_accel(self, image: guestbuild.GuestImage) -> str:
        chosen = accelmod.choose(image.kernel, image.initrd, guestbuild.DEFAULT_CACHE)
        (self.layout.run_dir / "accel").write_text(chosen + "\n")
        return chosen

    @property
    def accel(self) -> str:
        """'kvm' or 'tcg': what this lab's guests run on (decided at up)."""
        try:
            return (self.layout.run_dir / "accel").read_text().strip() or "tcg"
        except OSError:
            return os.environ.get("LABMIG_ACCEL", "tcg")

    def _install_boot_files(self, image: guestbuild.GuestImage) -> None:
        boot = self.layout.boot_dir
        stamp = boot / "key"
        if stamp.exists() and stamp.read_text().strip() == image.key:
            return
        boot.mkdir(parents=True, exist_ok=True)
        for src, name in ((image.kernel, "vmlinuz"), (image.initrd, "initrd.img")):
            tmp = boot / f".{name}.new"
            shutil.copyfile(src, tmp)
            os.replace(tmp, boot / name)
        stamp.write_text(image.key + "\n")

    def down(self) -> list[str]:
        """Stop everything the lab started and remove its namespaces.

        Keeps the shared images, domain definitions and keys; the hosts' own image
        directories are in-memory file systems and are emptied.
        """
        _require_root()
        done = []
        for h in self.layout.hosts:
            if libvirtd.pid(h):
                self._destroy_domains(h)
                libvirtd.stop(h)
                done.append(f"libvirtd on {h.name}")
            if sshd.stop(h):
                done.append(f"sshd on {h.name}")
        done += [f"process {p}" for p in self._kill_leftovers()]
        done += netns.destroy_namespaces(self.layout)
        (self.layout.run_dir / "up").unlink(missing_ok=True)
        return done

    def _destroy_domains(self, host: HostLayout) -> None:
        try:
            conn = libvirtd.connect(host)
        except LabError:
            return
        try:
            for dom in conn.listAllDomains(1):  # active only
                try:
                    dom.destroy()
                except Exception as exc:  # a domain vanishing meanwhile is fine
                    log.debug("destroy %s: %s", dom.name(), exc)
        finally:
            conn.close()

    def _kill_leftovers(self) -> list[int]:
        pids = netns.lab_pids(self.layout)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for p in pids:
                try:
                    os.kill(p, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline and any(_alive(p) for p in pids):
                time.sleep(0.05)
        return pids

    def clean(self) -> list[str]:
        """``down``, then remove everything of this lab, including what a crashed run left."""
        _require_root()
        done = self.down()
        for d in (self.layout.run_dir, self.layout.state_dir):
            if d.exists():
                if d.parent not in (STATE_ROOT, self.layout.run_dir.parent) or d.name != self.name:
                    raise LabError(f"refusing to remove {d}", hint="lab directories must be named after the lab")
                shutil.rmtree(d)
                done.append(f"directory {d}")
        return done

    def status(self) -> dict:
        """What is up, as plain data."""
        hosts = {}
        for h in self.layout.hosts:
            info: dict = {
                "namespaces": netns.host_ready(h),
                "libvirtd": libvirtd.pid(h),
                "sshd": sshd.pid(h),
                "uri": h.uri,
                "address": h.link_addr,
                "local_image_dir": str(h.local_image_dir_outside),
                "domains": {},
            }
            if info["libvirtd"]:
                try:
                    conn = libvirtd.connect(h)
                    try:
                        for dom in conn.listAllDomains(0):
                            info["domains"][dom.name()] = "running" if dom.isActive() else "shut off"
                    finally:
                        conn.close()
                except LabError as exc:
                    info["error"] = str(exc)
            hosts[h.name] = info
        up = all(v["namespaces"] and v["libvirtd"] and v["sshd"] for v in hosts.values())
        link = {}
        if all(v["namespaces"] for v in hosts.values()):
            link = {"up": netns.link_is_up(self.layout), "rate": netns.link_rate(self.layout)}
        return {"lab": self.name, "up": up, "hosts": hosts, "link": link,
                "shared_image_dir": str(self.layout.shared_dir), "client_netns": self.layout.client_netns,
                "leftover_processes": [] if up else netns.lab_pids(self.layout)}

    def is_up(self) -> bool:
        return all(libvirtd.pid(h) and sshd.pid(h) and netns.host_ready(h) for h in self.layout.hosts)

    def require_up(self) -> None:
        if not self.is_up():
            raise LabError(f"lab {self.name!r} is not up", hint=f"run `labmig lab up --name {self.name}` (as root)")

    # --- link --------------------------------------------------------------------

    def shape_link(self, rate: float | None, latency: float | None = None) -> None:
        """Limit the inter-host link to ``rate`` bytes/s (None: remove the limit)."""
        if rate is not None and rate <= 0:
            raise InvalidInput(f"link rate {rate} must be positive", hint="e.g. 32MiB/s, or None for unlimited")
        netns.shape_link(self.layout, rate, latency)

    @property
    def link_rate(self) -> int | None:
        return netns.link_rate(self.layout)

    # --- guests ------------------------------------------------------------------

    def guest(self, spec: GuestSpec | str) -> LabGuest:
        """A handle on a guest (by spec, or by name of a guest defined on a host)."""
        if isinstance(spec, GuestSpec):
            return LabGuest(self, spec)
        for h in self.hosts.values():
            if h.domain_state(spec) is not None:
                return LabGuest(self, _spec_from_domain(h, spec))
        raise InvalidInput(f"no guest {spec!r} in lab {self.name!r}", hint="create it with create_guest()")

    def create_guest(self, spec: GuestSpec | None = None, host: str = "lab1", start: bool = True,
                     wait: bool = True, timeout: float = 90.0) -> LabGuest:
        """Create the guest's disk (never reusing one), define it on ``host`` and boot it."""
        spec = spec or GuestSpec()
        spec.validate()
        self.require_up()
        h = self.host(host)
        for other in self.hosts.values():
            if other.domain_state(spec.name) is not None:
                raise LabError(f"guest {spec.name} is already defined on {other.name}",
                               hint="remove it first (remove_guest) or pick another name")
        guest = LabGuest(self, spec)
        create_disk(guest.disk_outside(host), spec.disk_size)
        for other in self.hosts.values():
            other.console_path(spec.name).unlink(missing_ok=True)
        xml = domain_xml(self.layout, spec, guest.disk, h.layout.console_log(spec.name),
                         "kvm" if self.accel == "kvm" else "qemu",
                         direct_io=supports_direct_io(guest.disk_outside(host).parent))
        conn = h.connect()
        try:
            dom = conn.defineXML(xml)
            if start:
                dom.create()
        except Exception as exc:
            raise LabError(f"could not define/start {spec.name} on {host}: {exc}",
                           hint=f"see {h.outside('/var/log/libvirt/qemu')}/{spec.name}.log") from exc
        finally:
            conn.close()
        if start and wait:
            guest.wait_ready(host, timeout=timeout)
        return guest

    def remove_guest(self, name: str, remove_disk: bool = True) -> None:
        """Destroy and undefine the guest on every host; delete its disk copies."""
        import libvirt
        spec = None
        for h in self.hosts.values():
            conn = h.connect()
            try:
                dom = conn.lookupByName(name)
            except libvirt.libvirtError:
                conn.close()
                continue
            try:
                spec = spec or _spec_from_domain(h, name)
                if dom.isActive():
                    dom.destroy()
                dom.undefine()
            finally:
                conn.close()
        if remove_disk:
            for path in {self.layout.shared_dir / f"{name}.img"} | {
                    h.outside(f"{h.local_image_dir}/{name}.img") for h in self.hosts.values()}:
                Path(path).unlink(missing_ok=True)


def _spec_from_domain(host: LabHost, name: str) -> GuestSpec:
    """Recover a GuestSpec from a defined domain's XML (its kernel command line and disk)."""
    import xml.etree.ElementTree as ET
    conn = host.connect()
    try:
        root = ET.fromstring(conn.lookupByName(name).XMLDesc(0))
    finally:
        conn.close()
    args = dict(w.split("=", 1) for w in (root.findtext("os/cmdline") or "").split() if "=" in w)
    source = root.find("devices/disk/source")
    disk = "shared" if source is not None and str(host.lab.layout.shared_dir) in source.get("file", "") else "local"
    ip = args.get("labmig.ip", "0.0.0.11/24").split("/")[0]
    return GuestSpec(
        name=name, index=int(ip.rsplit(".", 1)[1]) - 10, memory=int(root.findtext("memory") or 262144) * 1024,
        dirty_rate=int(args.get("labmig.dirty", 0)), wss=int(args.get("labmig.wss", 0)), disk=disk,
        heartbeat_ms=int(args.get("labmig.hb", 1000)), check_ms=int(args.get("labmig.check", 2000)),
    )


def _check_qemu() -> None:
    out = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True, text=True, check=False).stdout
    try:
        major = int(out.split("version", 1)[1].split(".")[0])
    except (IndexError, ValueError) as exc:
        raise LabError("qemu-system-x86_64 is missing or unreadable", hint="run `labmig lab up` as root") from exc
    if major < QEMU_MIN_MAJOR and os.environ.get("LABMIG_ACCEL") != "kvm":
        raise LabError(f"QEMU {major} corrupts TCG guests after a multi-pass live migration",
                       hint="install QEMU from bookworm-backports: bash labmig/lab/host-packages.sh")


def _timed(fn, *args):
    """(fn(*args), seconds it took): for steps that run in a worker thread."""
    t = time.monotonic()
    value = fn(*args)
    return value, round(time.monotonic() - t, 3)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _require_root() -> None:
    if os.geteuid() != 0:
        raise LabError("the local lab needs root (namespaces, bridges, libvirtd)", hint="run it with sudo")
