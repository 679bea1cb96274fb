"""Read and rewrite libvirt domain XML for the destination host, with a parser.

    DiskRef            one file-backed disk: target device, path, device kind, read-only
    read_disks()       the file-backed disks of a domain definition
    read_networks()    the libvirt networks / bridges its interfaces attach to
    PathMap            host-specific directory prefixes: source dir -> destination dir
    rewrite_for_host() the definition as the destination must see it

Host-specific parts rewritten: every file path under a mapped directory (disk
sources, kernel/initrd/nvram, serial and console log files), network names,
the emulator binary; parts libvirt generates per host are dropped (the running
``id``, ``<alias>``, interface ``<target dev>``, dynamic ``<seclabel>``). Paths
outside every mapped directory (shared storage, system files) stay as they are.
"""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from ..errors import InvalidInput


@dataclass(frozen=True)
class DiskRef:
    target: str        # guest device name, e.g. "vda"
    path: str          # file on the host
    device: str        # "disk" | "cdrom" | ...
    readonly: bool


class PathMap:
    """Directory prefixes to rewrite, longest prefix first."""

    def __init__(self, mapping: dict[str, str] | None = None) -> None:
        self.mapping = {}
        for src, dst in (mapping or {}).items():
            self.mapping[os.path.normpath(src)] = os.path.normpath(dst)

    def map(self, path: str) -> str:
        norm = os.path.normpath(path)
        for src in sorted(self.mapping, key=len, reverse=True):
            if norm == src or norm.startswith(src + os.sep):
                return self.mapping[src] + norm[len(src):]
        return path

    def covers(self, path: str) -> bool:
        return self.map(path) != path or os.path.normpath(path) in self.mapping


def _parse(xml: str) -> ET.Element:
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise InvalidInput(f"the domain definition is not valid XML: {exc}", "check it with `virsh dumpxml`") from exc
    if root.tag != "domain":
        raise InvalidInput(f"expected a <domain> definition, got <{root.tag}>", "pass libvirt domain XML")
    return root


def domain_name(xml: str) -> str:
    return _parse(xml).findtext("name") or ""


def domain_uuid(xml: str) -> str:
    return (_parse(xml).findtext("uuid") or "").strip()


def read_disks(xml: str) -> list[DiskRef]:
    disks = []
    for disk in _parse(xml).findall("./devices/disk"):
        if disk.get("type") != "file":
            continue
        source = disk.find("source")
        if source is None or not source.get("file"):
            continue  # an empty cdrom drive
        target = disk.find("target")
        disks.append(DiskRef(target=target.get("dev", "") if target is not None else "",
                             path=source.get("file", ""),
                             device=disk.get("device", "disk"),
                             readonly=disk.find("readonly") is not None))
    return disks


def read_networks(xml: str) -> dict[str, list[str]]:
    """{'network': [names...], 'bridge': [names...]} of the domain's interfaces."""
    out: dict[str, list[str]] = {"network": [], "bridge": []}
    for iface in _parse(xml).findall("./devices/interface"):
        kind = iface.get("type")
        source = iface.find("source")
        if source is None or kind not in out:
            continue
        name = source.get(kind)
        if name and name not in out[kind]:
            out[kind].append(name)
    return out


def _map_attr(elem: ET.Element | None, attr: str, paths: PathMap) -> None:
    value = elem.get(attr) if elem is not None else None
    if elem is not None and value:
        elem.set(attr, paths.map(value))


def rewrite_for_host(xml: str, paths: PathMap, disk_map: dict[str, str] | None = None,
                     networks: dict[str, str] | None = None, emulator: str | None = None) -> str:
    """The definition for the destination. ``disk_map`` (exact paths) wins over ``paths``."""
    root = _parse(xml)
    disk_map = disk_map or {}
    networks = networks or {}
    root.attrib.pop("id", None)
    for alias in root.iter():
        for child in list(alias):
            if child.tag == "alias":
                alias.remove(child)
    for label in root.findall("seclabel"):
        if label.get("type") == "dynamic":
            root.remove(label)
    osel = root.find("os")
    if osel is not None:
        for tag in ("kernel", "initrd", "dtb", "loader", "nvram"):
            for el in osel.findall(tag):
                if el.text:
                    el.text = paths.map(el.text.strip())
                _map_attr(el, "template", paths)
    devices = root.find("devices")
    if devices is None:
        return ET.tostring(root, encoding="unicode")
    if emulator:
        em = devices.find("emulator")
        if em is not None:
            em.text = emulator
    for disk in devices.findall("disk"):
        source = disk.find("source")
        old = source.get("file") if source is not None else None
        if source is not None and old:
            source.set("file", disk_map.get(old, paths.map(old)))
    for tag in ("serial", "console", "channel", "parallel"):
        for dev in devices.findall(tag):
            if dev.get("type") == "file":
                _map_attr(dev.find("source"), "path", paths)
            _map_attr(dev.find("log"), "file", paths)
    for iface in devices.findall("interface"):
        target = iface.find("target")
        if target is not None:
            iface.remove(target)
        source = iface.find("source")
        kind = iface.get("type")
        network = source.get(kind) if source is not None and kind in ("network", "bridge") else None
        if source is not None and kind is not None and network in networks:
            source.set(kind, networks[network])
    return ET.tostring(root, encoding="unicode")
