"""One libvirtd per lab host: its configuration, start, stop and warm-up.

    write_config()   libvirtd.conf + qemu.conf for a host with no systemd, polkit or virtlogd
    start()/stop()   the daemon inside the host's namespaces (pid file in its /run/libvirt)
    pid()            the running daemon's pid, or None
    connect()        a libvirt-python connection from the root namespace
    warm()           make the daemon probe QEMU's capabilities now, not at the first define

Settings that matter for two daemons on one machine: distinct ``host_uuid`` (else
migration refuses "the same host"); unix sockets without auth; TCP without auth
bound to the link address for peer-to-peer migration; ``migration_address`` and
``migration_host`` on the link; QEMU's stdio to files (no virtlogd); no cgroups,
no security driver, no private /dev namespace (none of which work here).
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import time

from ..errors import LabError
from .layout import LIBVIRT_TCP_PORT, HostLayout
from .netns import host_cmd

log = logging.getLogger(__name__)

LIBVIRTD = "/usr/sbin/libvirtd"


def render_libvirtd_conf(host_uuid: str, listen_addr: str, label: str) -> str:
    return f"""\
# labmig migration host {label}
listen_tls = 0
listen_tcp = 1
listen_addr = "{listen_addr}"
tcp_port = "{LIBVIRT_TCP_PORT}"
auth_tcp = "none"
auth_unix_ro = "none"
auth_unix_rw = "none"
unix_sock_group = "root"
unix_sock_ro_perms = "0777"
unix_sock_rw_perms = "0770"
host_uuid = "{host_uuid}"
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
keepalive_interval = 5
keepalive_count = 5
"""


def render_qemu_conf(migration_addr: str, label: str) -> str:
    return f"""\
# labmig migration host {label}
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
cgroup_controllers = [ ]
namespaces = [ ]
stdio_handler = "file"
migration_address = "{migration_addr}"
migration_host = "{migration_addr}"
set_process_name = 1
"""


def write_config(host: HostLayout) -> None:
    etc = host.state_dir / "etc-libvirt"
    etc.mkdir(parents=True, exist_ok=True)
    label = f"{host.name} (lab {host.lab})"
    (etc / "libvirtd.conf").write_text(render_libvirtd_conf(host.host_uuid, host.link_addr, label))
    (etc / "qemu.conf").write_text(render_qemu_conf(host.link_addr, label))
    for d in ("images", "qemu"):
        (host.state_dir / "lib-libvirt" / d).mkdir(parents=True, exist_ok=True)
    (host.state_dir / "log-libvirt" / "console").mkdir(parents=True, exist_ok=True)
    (host.state_dir / "log-libvirt" / "qemu").mkdir(parents=True, exist_ok=True)


def pid_file(host: HostLayout):
    return host.run_dir / "run-libvirt" / "libvirtd.pid"


def pid(host: HostLayout) -> int | None:
    try:
        p = int(pid_file(host).read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        with open(f"/proc/{p}/comm") as f:
            if f.read().strip() != "libvirtd":
                return None
    except OSError:
        return None
    return p


def start(host: HostLayout, timeout: float = 30.0) -> int:
    """Start libvirtd on ``host`` (if not running) and wait for its socket."""
    current = pid(host)
    if current:
        return current
    log_path = host.state_dir / "log-libvirt" / "libvirtd.stderr"
    with open(log_path, "ab") as err:
        proc = subprocess.run(
            host_cmd(host) + [LIBVIRTD, "--daemon", "--listen", "--pid-file", "/run/libvirt/libvirtd.pid",
                              "--config", "/etc/libvirt/libvirtd.conf"],
            stdout=err, stderr=err, stdin=subprocess.DEVNULL, check=False, timeout=timeout)
    if proc.returncode != 0:
        raise LabError(f"libvirtd did not start on {host.name} (exit {proc.returncode})",
                       hint=f"see {log_path} and {host.state_dir / 'log-libvirt' / 'libvirtd.log'}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        p = pid(host)
        if p and host.socket_outside.exists():
            try:
                connect(host).close()
                return p
            except LabError:
                pass
        time.sleep(0.1)
    raise LabError(f"libvirtd on {host.name} did not answer within {timeout:.0f} s",
                   hint=f"see {host.state_dir / 'log-libvirt' / 'libvirtd.log'}")


def stop(host: HostLayout, timeout: float = 15.0) -> bool:
    """Stop the daemon (SIGTERM, then SIGKILL). True when one was running."""
    p = pid(host)
    if not p:
        return False
    os.kill(p, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and pid(host):
        time.sleep(0.1)
    if pid(host):
        os.kill(p, signal.SIGKILL)
    return True


def connect(host: HostLayout):
    """A libvirt connection to ``host`` from the root namespace."""
    try:
        import libvirt
    except ImportError as exc:
        raise LabError("libvirt-python is not installed", hint="pip install '.[lab]' (make setup does)") from exc
    _quiet(libvirt)
    try:
        return libvirt.open(host.uri)
    except libvirt.libvirtError as exc:
        raise LabError(f"cannot connect to libvirtd on {host.name}: {exc}",
                       hint="`labmig lab up` starts it; `labmig lab status` says what runs") from exc


_quieted = False


def _quiet(libvirt) -> None:
    """Stop libvirt printing every error on stderr; labmig raises them instead."""
    global _quieted
    if not _quieted:
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
        _quieted = True


def warm(host: HostLayout) -> float:
    """Ask for the domain capabilities so the daemon probes QEMU now. Returns seconds taken."""
    t0 = time.monotonic()
    conn = connect(host)
    try:
        conn.getDomainCapabilities(None, "x86_64", None, "qemu", 0)
    finally:
        conn.close()
    return time.monotonic() - t0
