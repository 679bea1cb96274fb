"""Migration hosts: a libvirt URI, a name, and a guarded connection.

    Host            one libvirt host: ``name``, ``uri``, the address QEMU's migration
                    stream goes to; ``connect()`` opens a keepalive connection under a
                    watchdog, ``domain(name)`` looks a VM up; a context manager
    resolve_host()  "lab1" → the local lab's host of that name (via labmig.lab),
                    "qemu+tcp://10.0.0.2/system" → a Host for that URI
    lab_hosts()     the local lab's hosts, or [] when no lab is up

Real hosts (a Vagrant pair, two servers) are reached by URI; the local lab's by name.
"""
from __future__ import annotations

import logging
import re
import socket
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from .errors import InvalidInput, LabmigError
from .watchdog import HostUnresponsive, Watchdog, event_loop

log = logging.getLogger(__name__)

_URI = re.compile(r"^[a-z0-9+]+:///?")


class HostUnreachable(LabmigError):
    """A host's libvirt daemon could not be reached."""


@dataclass
class Host:
    """A libvirt host. ``migration_address`` is where the destination listens for QEMU's stream."""

    name: str
    uri: str
    migration_address: str | None = None
    peer: str | None = None        # URI the *other* host's daemon uses for this one (peer-to-peer)
    call_timeout: float = 15.0
    _conn: Any = field(default=None, repr=False, compare=False)

    @property
    def watchdog(self) -> Watchdog:
        return Watchdog(self.call_timeout)

    def connect(self) -> Any:
        """Open (once) a connection with keepalive, so a dead peer is noticed within seconds."""
        if self._conn is not None:
            try:
                if self._conn.isAlive():
                    return self._conn
            except Exception:  # a closed or broken connection: open a new one
                pass
            self._conn = None
        import libvirt

        event_loop()
        try:
            conn = self.watchdog.call(f"connecting to {self.name} ({self.uri})", libvirt.open, self.uri)
        except HostUnresponsive as exc:
            raise HostUnreachable(str(exc.message), exc.hint) from exc
        except libvirt.libvirtError as exc:
            raise HostUnreachable(
                f"cannot reach host {self.name} at {self.uri}: {exc.get_error_message()}",
                "is its libvirt daemon running? (labmig lab up starts the local lab's)",
            ) from exc
        try:
            conn.setKeepAlive(2, 3)
        except libvirt.libvirtError:
            log.debug("keepalive not supported on %s", self.uri)
        self._conn = conn
        return conn

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                Watchdog(5).call(f"closing {self.name}", conn.close)
            except Exception:  # closing a dead connection may fail; it is gone either way
                log.debug("closing %s failed", self.name, exc_info=True)

    def __enter__(self) -> "Host":
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, what: str, fn: Any, *args: Any, timeout: float | None = None) -> Any:
        """Run a libvirt call under this host's watchdog."""
        return self.watchdog.call(f"{what} on {self.name}", fn, *args, timeout=timeout)

    def domain(self, vm: str) -> Any | None:
        """The libvirt domain named ``vm`` on this host, or None."""
        import libvirt

        conn = self.connect()
        try:
            return self.call(f"looking up {vm}", conn.lookupByName, vm)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise

    def host_uuid(self) -> str:
        """The host's UUID from its capabilities: two URIs naming one daemon share it."""
        conn = self.connect()
        caps = self.call("reading capabilities", conn.getCapabilities)
        match = re.search(r"<uuid>([^<]+)</uuid>", caps)
        return match.group(1) if match else self.uri

    def migration_uri(self) -> str | None:
        """``tcp://ADDRESS`` for QEMU's stream, from the address or the URI's host part."""
        address = self.migration_address or urlparse(self.uri).hostname
        return f"tcp://{address}" if address else None

    def peer_uri(self) -> str:
        """The URI the source's daemon dials for peer-to-peer migration."""
        return self.peer or self.uri


def lab_hosts(lab: str | None = None) -> list[Host]:
    """The local lab's hosts (lab name from ``lab`` or LABMIG_LAB); [] when that lab is not up."""
    try:
        from .lab.layout import make_layout
    except ImportError:
        return []
    try:
        layout = make_layout(lab)
    except LabmigError:
        return []
    return [Host(name=h.name, uri=h.uri, migration_address=h.link_addr, peer=h.migration_uri)
            for h in layout.hosts if h.socket_outside.exists()]


def resolve_host(spec: str) -> Host:
    """A Host from a lab host name ("lab1") or a libvirt URI ("qemu+ssh://host/system")."""
    spec = (spec or "").strip()
    if not spec:
        raise InvalidInput("no host given", "name a lab host (lab1, lab2) or a libvirt URI")
    if _URI.match(spec):
        parsed = urlparse(spec)
        name = parsed.hostname or spec
        if parsed.hostname:
            try:
                socket.getaddrinfo(parsed.hostname, None)
            except OSError as exc:
                raise InvalidInput(f"unknown host {parsed.hostname!r} in URI {spec!r}",
                                   "check the host name, or use an IP address") from exc
        return Host(name=name, uri=spec)
    hosts = lab_hosts()
    for host in hosts:
        if host.name == spec:
            return host
    known = ", ".join(h.name for h in hosts) or "none: is the lab up? (labmig lab up)"
    raise InvalidInput(f"unknown host {spec!r}",
                       f"use a lab host name (known: {known}) or a libvirt URI like qemu+tcp://10.0.0.2/system")
