"""What a cold migration needs to know about each host, beyond its libvirt URI.

    ColdHost        a :class:`~labmig.hosts.Host` plus its storage layout and ssh access:
                    ``image_dirs`` (local disks: copied), ``shared_dirs`` (shared storage:
                    not copied), ``log_dirs`` (console logs: rewritten), ``ssh`` (an
                    :class:`~labmig.remote.ssh.SshTarget` for the disk helper) and
                    ``views``, the directory prefixes through which this process sees
                    the host's files (empty when they are visible as they are)
    cold_host()     a ColdHost for a lab host name or a libvirt URI
    cold_host_from()  the same from the description a journal keeps

For the local lab it comes from the lab's layout (labmig.lab.layout): each host has a private
image directory at the same path inside its mount namespace, the lab's shared
directory, and sshd on the link; the helper is reached by ssh run inside the
*other* host, so the disk stream crosses the lab's link as Nova's copy would.
For a host given by URI, the image directory is the path of its libvirt storage
pool ``default`` and ssh goes to the URI's host.
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
from .domxml import PathMap

log = logging.getLogger(__name__)


@dataclass
class ColdHost:
    host: Host
    image_dirs: list[str]
    shared_dirs: list[str] = field(default_factory=list)
    log_dirs: list[str] = field(default_factory=list)
    ssh: SshTarget | None = None
    views: dict[str, str] = field(default_factory=dict)
    ready_marker: str | None = None      # what its guests print on the console once up

    @property
    def name(self) -> str:
        return self.host.name

    def local_path(self, path: str) -> str:
        """Where this process finds the host's file ``path``."""
        return PathMap(self.views).map(path) if self.views else path

    def classify(self, path: str) -> str:
        """'local' (copy it), 'shared' (leave it) or 'other' for a disk path on this host."""
        norm = os.path.normpath(path)
        for kind, dirs in (("shared", self.shared_dirs), ("local", self.image_dirs)):
            for d in dirs:
                if norm.startswith(os.path.normpath(d) + os.sep):
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
        ssh = None
        if self.ssh is not None:
            ssh = {k: getattr(self.ssh, k) for k in ("address", "port", "user", "identity", "known_hosts",
                                                      "python", "config")}
            ssh["via"] = list(self.ssh.via)
        return {"name": self.host.name, "uri": self.host.uri, "image_dirs": self.image_dirs,
                "shared_dirs": self.shared_dirs, "log_dirs": self.log_dirs, "views": self.views, "ssh": ssh,
                "ready_marker": self.ready_marker}


def _from_layout(host: Host, layout: dict[str, Any]) -> ColdHost:
    ssh = layout.get("ssh")
    target = None
    if ssh:
        target = SshTarget(address=ssh.get("address"), port=int(ssh.get("port") or 22),
                           user=ssh.get("user") or "root", identity=ssh.get("identity"),
                           known_hosts=ssh.get("known_hosts"), python=ssh.get("python") or sys.executable,
                           config=ssh.get("config"), via=tuple(ssh.get("via") or ()))
    listify = lambda v: [str(v)] if isinstance(v, (str, os.PathLike)) else [str(x) for x in (v or [])]  # noqa: E731
    return ColdHost(host=host, image_dirs=listify(layout.get("image_dirs")),
                    shared_dirs=listify(layout.get("shared_dirs")), log_dirs=listify(layout.get("log_dirs")),
                    ssh=target, views={str(k): str(v) for k, v in (layout.get("views") or {}).items()},
                    ready_marker=layout.get("ready_marker"))


def lab_layout(name: str, lab: str | None = None) -> dict[str, Any] | None:
    """The layout of the local lab's host ``name``, or None when it is not a lab host."""
    from ..lab import layout as lablayout
    from ..lab.netns import host_cmd
    from ..lab.sshd import config_path

    whole = lablayout.make_layout(lab)
    try:
        h = whole.host(name)
    except Exception:
        return None
    other = whole.other(name)
    views = {inside: str(h.outside(inside)) for inside in lablayout.PRIVATE_DIRS.values()}
    return {
        "image_dirs": [lablayout.LOCAL_IMAGE_DIR],
        "shared_dirs": [str(whole.shared_dir)],
        "log_dirs": [lablayout.CONSOLE_DIR],
        "views": views,
        "ready_marker": "LABMIG READY",
        "ssh": {"address": h.name, "config": str(config_path(whole)), "python": sys.executable,
                "via": host_cmd(other)},
    }


def cold_host(spec: str | Host, **overrides: Any) -> ColdHost:
    """A ColdHost for "lab1" / a URI / a Host; ``overrides`` replace layout entries."""
    host = spec if isinstance(spec, Host) else resolve_host(spec)
    layout: dict[str, Any] | None = None
    if "://" not in host.name:
        try:
            layout = lab_layout(host.name, os.environ.get("LABMIG_LAB") or None)
        except (ImportError, LabError) as exc:
            log.debug("no lab layout for %s: %s", host.name, exc)
    if layout is None or not host.uri.startswith("qemu+unix"):
        layout = _layout_from_libvirt(host)
    layout.update({k: v for k, v in overrides.items() if v is not None})
    side = _from_layout(host, layout)
    if not side.image_dirs:
        raise PrecheckFailed(f"no image directory known for host {host.name}",
                             "define a libvirt storage pool named 'default' there")
    return side


def cold_host_from(description: dict[str, Any]) -> ColdHost:
    """A ColdHost from ``ColdHost.describe()`` as written in a journal (recovery needs no lab lookup)."""
    return _from_layout(Host(name=description["name"], uri=description["uri"]), description)


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
