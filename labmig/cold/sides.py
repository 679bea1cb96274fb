"""What a cold migration needs to know about each host, beyond its libvirt URI.

    ColdHost     a :class:`~labmig.hosts.Host` plus its storage layout and ssh access:
                 ``image_dirs`` (local disks: copied), ``shared_dirs`` (shared storage:
                 not copied), ``log_dirs`` (serial logs: rewritten), ``ssh`` (an
                 :class:`~labmig.remote.ssh.SshTarget` for the disk helper) and
                 ``local_root``, the prefix through which this process reads the host's
                 files (empty when they are visible as they are)
    cold_host()  a ColdHost for a lab host name or a libvirt URI

For the local lab the layout comes from ``labmig.lab.host_layout(name)`` (a dict
with ``image_dir``, ``shared_dir``, ``log_dir``, ``root``, ``ssh``: address, port,
user, identity, known_hosts). For a host given by URI, the image directory is the
path of its libvirt storage pool ``default`` and ssh goes to the URI's host.
"""
from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from ..errors import LabError, PrecheckFailed
from ..hosts import Host, resolve_host
from ..remote.ssh import SshTarget

log = logging.getLogger(__name__)


@dataclass
class ColdHost:
    host: Host
    image_dirs: list[str]
    shared_dirs: list[str] = field(default_factory=list)
    log_dirs: list[str] = field(default_factory=list)
    ssh: SshTarget | None = None
    local_root: str = ""

    @property
    def name(self) -> str:
        return self.host.name

    def local_path(self, path: str) -> str:
        """Where this process finds the host's file ``path``."""
        return os.path.join(self.local_root, path.lstrip("/")) if self.local_root else path

    def classify(self, path: str) -> str:
        """'local' (copy it), 'shared' (leave it) or 'other' for a disk path on this host."""
        norm = os.path.normpath(path)
        for kind, dirs in (("shared", self.shared_dirs), ("local", self.image_dirs)):
            for d in dirs:
                d = os.path.normpath(d)
                if norm.startswith(d + os.sep):
                    return kind
        return "other"

    def relative(self, path: str) -> str:
        norm = os.path.normpath(path)
        for d in self.image_dirs:
            d = os.path.normpath(d)
            if norm.startswith(d + os.sep):
                return norm[len(d) + 1:]
        raise ValueError(path)

    def describe(self) -> dict[str, Any]:
        return {"name": self.host.name, "uri": self.host.uri, "image_dirs": self.image_dirs,
                "shared_dirs": self.shared_dirs, "log_dirs": self.log_dirs, "local_root": self.local_root,
                "ssh": None if self.ssh is None else {
                    "address": self.ssh.address, "port": self.ssh.port, "user": self.ssh.user,
                    "identity": self.ssh.identity, "known_hosts": self.ssh.known_hosts, "python": self.ssh.python}}


def _from_layout(host: Host, layout: dict[str, Any]) -> ColdHost:
    ssh = layout.get("ssh") or {}
    target = SshTarget(address=ssh.get("address"), port=int(ssh.get("port", 22)), user=ssh.get("user", "root"),
                       identity=ssh.get("identity"), known_hosts=ssh.get("known_hosts"),
                       python=ssh.get("python") or sys.executable) if ssh else None
    listify = lambda v: [v] if isinstance(v, str) else list(v or [])  # noqa: E731
    return ColdHost(host=host,
                    image_dirs=listify(layout.get("image_dirs") or layout.get("image_dir")),
                    shared_dirs=listify(layout.get("shared_dirs") or layout.get("shared_dir")),
                    log_dirs=listify(layout.get("log_dirs") or layout.get("log_dir")),
                    ssh=target, local_root=layout.get("root") or "")


def cold_host(spec: str | Host, **overrides: Any) -> ColdHost:
    """A ColdHost for "lab1" / a URI / a Host; ``overrides`` replace layout entries."""
    host = spec if isinstance(spec, Host) else resolve_host(spec)
    layout: dict[str, Any] | None = None
    try:
        from .. import lab as lab_module
        describe = getattr(lab_module, "host_layout", None)
        if describe is not None:
            layout = describe(host.name, os.environ.get("LABMIG_LAB") or None)
    except (ImportError, LabError, KeyError) as exc:
        log.debug("no lab layout for %s: %s", host.name, exc)
        layout = None
    if layout is None:
        layout = _layout_from_libvirt(host)
    layout.update({k: v for k, v in overrides.items() if v is not None})
    side = _from_layout(host, layout)
    if not side.image_dirs:
        raise PrecheckFailed(f"no image directory known for host {host.name}",
                             "define a libvirt storage pool named 'default' there, or pass --image-dir")
    return side


def _layout_from_libvirt(host: Host) -> dict[str, Any]:
    import xml.etree.ElementTree as ET

    import libvirt

    conn = host.connect()
    layout: dict[str, Any] = {"image_dirs": []}
    try:
        pool = host.call("looking up storage pool 'default'", conn.storagePoolLookupByName, "default")
        path = ET.fromstring(pool.XMLDesc(0)).findtext("target/path")
        if path:
            layout["image_dirs"] = [path]
    except libvirt.libvirtError:
        log.debug("no default pool on %s", host.name)
    address = urlparse(host.uri).hostname
    if address:
        layout["ssh"] = {"address": address}
    return layout


def cold_host_from(description: dict[str, Any]) -> ColdHost:
    """A ColdHost from ``ColdHost.describe()`` as written in a journal (recovery needs no lab lookup)."""
    host = Host(name=description["name"], uri=description["uri"])
    return _from_layout(host, description)
