"""Make a real machine a labmig migration host (the Vagrant pair, or two servers of yours).

    setup_host()   libvirtd.conf + qemu.conf (the same settings as the local lab's hosts),
                   the guest's kernel + initramfs in the lab's boot directory, a guest bridge
    guest_xml()    the lab guest's domain XML for such a host (what ``LocalLab.create_guest`` defines)

On a real host the lab's names and paths are those of :func:`~labmig.lab.layout.make_layout`
(boot files in ``/var/lib/labmig/<lab>/boot``, shared images in ``/var/lib/labmig/<lab>/shared``),
so a guest defined on one host finds the same paths on the other. Debian packages
come from ``host-packages.sh``, as for the local lab.
"""
from __future__ import annotations

import logging
import shutil
import uuid
from pathlib import Path

from ..errors import InvalidInput
from . import guestbuild, libvirtd, netns
from .guest import GuestSpec, create_disk, disk_path, domain_xml
from .layout import make_layout

log = logging.getLogger(__name__)


def setup_host(name: str, address: str, lab: str | None = None, etc: Path = Path("/etc/libvirt"),
               bridge_interface: str | None = None, bridge_addr: str | None = None) -> list[str]:
    """Configure this machine as lab host ``name`` whose migration address is ``address``.

    With ``bridge_interface``, a bridge ``br0`` is made on it (its address moved to
    ``bridge_addr`` on the bridge) so guests on both hosts share one network.
    Returns what it did. Restarting libvirtd is left to the caller (systemd or not).
    """
    layout = make_layout(lab)
    done = []
    if not name.isidentifier():
        raise InvalidInput(f"host name {name!r} is not usable", hint="e.g. lab1")
    etc.mkdir(parents=True, exist_ok=True)
    host_uuid = str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{name}.{layout.name}.labmig"))
    label = f"{name} (lab {layout.name})"
    (etc / "libvirtd.conf").write_text(libvirtd.render_libvirtd_conf(host_uuid, address, label))
    (etc / "qemu.conf").write_text(libvirtd.render_qemu_conf(address, label))
    done.append(f"wrote {etc / 'libvirtd.conf'} and {etc / 'qemu.conf'}")
    for d in (Path("/var/lib/libvirt/images"), Path("/var/log/libvirt/console"), layout.shared_dir):
        d.mkdir(parents=True, exist_ok=True)
    image = guestbuild.build_guest()
    layout.boot_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(image.kernel, layout.boot_dir / "vmlinuz")
    shutil.copyfile(image.initrd, layout.boot_dir / "initrd.img")
    done.append(f"guest kernel and initramfs in {layout.boot_dir}")
    if bridge_interface:
        if netns.run(["ip", "link", "show", "br0"], check=False).returncode != 0:
            netns.run(["ip", "link", "add", "br0", "type", "bridge"])
        netns.run(["ip", "link", "set", bridge_interface, "master", "br0"])
        netns.run(["ip", "link", "set", "br0", "up"])
        if bridge_addr:
            netns.run(["ip", "addr", "flush", "dev", bridge_interface])
            netns.run(["ip", "addr", "replace", bridge_addr, "dev", "br0"])
        done.append(f"bridge br0 over {bridge_interface}")
    return done


def guest_xml(spec: GuestSpec, lab: str | None = None, accel: str = "kvm", create: bool = True) -> str:
    """Domain XML of the lab guest for a real host; creates its disk unless it exists."""
    layout = make_layout(lab)
    spec.validate()
    disk = Path(disk_path(layout, spec))
    if create and not disk.exists():
        create_disk(disk, spec.disk_size)
    if accel not in ("kvm", "tcg"):
        raise InvalidInput(f"accelerator {accel!r} unknown", hint="kvm or tcg")
    return domain_xml(layout, spec, str(disk), f"/var/log/libvirt/console/{spec.name}.log",
                      "kvm" if accel == "kvm" else "qemu")
