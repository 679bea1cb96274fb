"""Build the lab guest: a Debian kernel and a busybox initramfs with the workload.

    GuestImage        where a built kernel + initramfs are, and what went into them
    build_guest()     builds once per distinct input and caches the result
    write_cpio()      a tiny newc cpio writer (the initramfs format), no external tool

The kernel comes from Debian's cloud kernel package, downloaded with
``apt-get download`` and extracted, never installed. The initramfs holds
busybox-static, the virtio modules the guest needs, the ``init`` script and the
statically linked ``labmig-workload`` compiled from ``labmig/guest/workload.c``.
Builds are cached under a key hashed from every input, so a second ``lab up``
(or a second lab on the same machine) costs nothing.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import os
import re
import shutil
import stat
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import LabError

log = logging.getLogger(__name__)

BUILD_VERSION = "2"
KERNEL_META_PACKAGES = ("linux-image-cloud-amd64", "linux-image-amd64")
# The drivers the guest needs; their dependencies are added and ordered from each
# module's own "depends=" record.
GUEST_MODULES = ("virtio_pci", "virtio_net", "virtio_blk")
BUSYBOX = Path("/bin/busybox")
GUEST_SRC = Path(__file__).resolve().parent.parent / "guest"
DEFAULT_CACHE = Path(os.environ.get("LABMIG_CACHE_DIR", "/var/cache/labmig"))


@dataclass(frozen=True)
class GuestImage:
    kernel: Path
    initrd: Path
    kernel_package: str
    key: str


def _run(argv: list[str], cwd: Path | None = None) -> str:
    try:
        proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise LabError(f"{argv[0]} not found",
                       hint="run `labmig lab up` as root so it installs the lab packages") from exc
    if proc.returncode != 0:
        raise LabError(f"{' '.join(argv)} failed: {proc.stderr.strip()[-400:]}",
                       hint="check the apt sources and that the lab packages are installed")
    return proc.stdout


def kernel_package() -> str:
    """The versioned kernel package the cloud meta-package points at (e.g. linux-image-6.1.0-56-cloud-amd64)."""
    for meta in KERNEL_META_PACKAGES:
        try:
            out = _run(["apt-cache", "depends", "--no-recommends", "--no-suggests", meta])
        except LabError:
            continue
        for line in out.splitlines():
            line = line.strip()
            if line.startswith("Depends:") and "linux-image-" in line:
                return line.split(":", 1)[1].strip()
    raise LabError("no Debian kernel package found for the lab guest",
                   hint="run `apt-get update` so apt knows linux-image-cloud-amd64")


def _cached_kernel_package(cache: Path) -> str | None:
    """The kernel package already downloaded, if any (spares a slow apt-cache call)."""
    debs = sorted((cache / "debs").glob("linux-image-*.deb"), key=lambda p: p.stat().st_mtime)
    return debs[-1].name.split("_", 1)[0] if debs else None


def download_kernel(cache: Path, package: str) -> Path:
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    found = sorted(debs.glob(f"{package}_*.deb"))
    if found:
        return found[-1]
    with tempfile.TemporaryDirectory(dir=debs) as tmp:
        # apt's sandbox user cannot write into root's directory; make it writable.
        os.chmod(tmp, 0o777)
        log.info("downloading %s", package)
        _run(["apt-get", "download", "-q", package], cwd=Path(tmp))
        got = sorted(Path(tmp).glob(f"{package}_*.deb"))
        if not got:
            raise LabError(f"apt-get download {package} produced no file", hint="check the apt sources")
        target = debs / got[-1].name
        os.replace(got[-1], target)
    return target


def write_cpio(entries: list[tuple[str, int, bytes, tuple[int, int] | None]]) -> bytes:
    """newc cpio archive of (name, mode, data, (rdev_major, rdev_minor) or None) entries."""
    out = io.BytesIO()

    def pad(n: int) -> None:
        out.write(b"\0" * ((4 - n % 4) % 4))

    def header(ino: int, name: str, mode: int, size: int, rdev: tuple[int, int] | None, nlink: int) -> None:
        major, minor = rdev or (0, 0)
        fields = [ino, mode, 0, 0, nlink, 0, size, 0, 0, major, minor, len(name) + 1, 0]
        out.write(b"070701" + b"".join(b"%08X" % f for f in fields))
        out.write(name.encode() + b"\0")
        pad(110 + len(name) + 1)

    for ino, (name, mode, data, rdev) in enumerate(entries, start=1):
        header(ino, name, mode, len(data), rdev, 2 if stat.S_ISDIR(mode) else 1)
        out.write(data)
        pad(len(data))
    header(0, "TRAILER!!!", 0, 0, None, 1)
    return out.getvalue()


def module_depends(ko: bytes) -> list[str]:
    """The modules a .ko names in its modinfo ``depends=`` record."""
    m = re.search(rb"(?:^|\0)depends=([^\0]*)", ko)
    if not m or not m.group(1):
        return []
    return [d.decode().replace("-", "_") for d in m.group(1).split(b",") if d]


def load_order(wanted: tuple[str, ...], mods: dict[str, Path]) -> list[str]:
    """``wanted`` plus everything they depend on, dependencies first."""
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in order:
            return
        if name not in mods:
            raise LabError(f"the guest kernel lacks module {name}",
                           hint="use a Debian amd64 kernel package with virtio modules")
        if name in visiting:
            raise LabError(f"module dependency loop at {name}")
        visiting.add(name)
        for dep in module_depends(mods[name].read_bytes()):
            visit(dep)
        visiting.discard(name)
        order.append(name)

    for name in wanted:
        visit(name)
    return order


def _inputs_key(package: str) -> str:
    h = hashlib.sha256()
    h.update(BUILD_VERSION.encode())
    h.update(package.encode())
    h.update(" ".join(GUEST_MODULES).encode())
    for path in (GUEST_SRC / "workload.c", GUEST_SRC / "init", BUSYBOX):
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def _prune(builds: Path, keep: Path, count: int = 3) -> None:
    """Drop all but the newest ``count`` builds (a lab still using an old one has its own copy)."""
    done = sorted((d for d in builds.iterdir() if (d / "manifest.json").exists()),
                  key=lambda d: d.stat().st_mtime, reverse=True)
    for d in done[count:]:
        if d != keep:
            shutil.rmtree(d, ignore_errors=True)


def build_guest(cache: Path = DEFAULT_CACHE, package: str | None = None) -> GuestImage:
    """Build (or reuse) the guest kernel + initramfs; returns where they are."""
    if not BUSYBOX.exists():
        raise LabError(f"{BUSYBOX} is missing", hint="install busybox-static (`labmig lab up` does)")
    package = package or _cached_kernel_package(cache) or kernel_package()
    key = _inputs_key(package)
    outdir = cache / "guest" / key
    manifest = outdir / "manifest.json"
    if manifest.exists():
        return GuestImage(outdir / "vmlinuz", outdir / "initrd.img", package, key)

    deb = download_kernel(cache, package)
    (cache / "guest").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache / "guest") as tmpname:
        tmp = Path(tmpname)
        _run(["dpkg-deb", "-x", str(deb), str(tmp / "deb")])
        kernels = sorted((tmp / "deb" / "boot").glob("vmlinuz-*"))
        if not kernels:
            raise LabError(f"{deb.name} holds no kernel", hint=f"remove {deb} and run again")
        modroot = next((tmp / "deb" / "lib" / "modules").iterdir())
        mods: dict[str, Path] = {}
        for ko in modroot.rglob("*.ko"):
            mods[ko.stem.replace("-", "_")] = ko
        modules = load_order(GUEST_MODULES, mods)
        workload = tmp / "labmig-workload"
        _run(["gcc", "-static", "-O2", "-Wall", "-o", str(workload), str(GUEST_SRC / "workload.c")])

        entries: list[tuple[str, int, bytes, tuple[int, int] | None]] = []
        for d in ("bin", "sbin", "dev", "proc", "sys", "tmp", "lib", "lib/modules", "root"):
            entries.append((d, stat.S_IFDIR | 0o755, b"", None))
        entries.append(("dev/console", stat.S_IFCHR | 0o600, b"", (5, 1)))
        entries.append(("dev/null", stat.S_IFCHR | 0o666, b"", (1, 3)))
        entries.append(("init", stat.S_IFREG | 0o755, (GUEST_SRC / "init").read_bytes(), None))
        entries.append(("bin/busybox", stat.S_IFREG | 0o755, BUSYBOX.read_bytes(), None))
        entries.append(("bin/sh", stat.S_IFLNK | 0o777, b"busybox", None))
        entries.append(("sbin/labmig-workload", stat.S_IFREG | 0o755, workload.read_bytes(), None))
        for m in modules:
            entries.append((f"lib/modules/{m}.ko", stat.S_IFREG | 0o644, mods[m].read_bytes(), None))
        entries.append(("lib/modules/order", stat.S_IFREG | 0o644, ("\n".join(modules) + "\n").encode(), None))

        stage = tmp / "out"
        stage.mkdir()
        (stage / "initrd.img").write_bytes(gzip.compress(write_cpio(entries), compresslevel=6, mtime=0))
        shutil.copyfile(kernels[-1], stage / "vmlinuz")
        (stage / "manifest.json").write_text(json.dumps({
            "kernel_package": package, "kernel": kernels[-1].name, "modules": modules, "key": key,
        }, indent=2))
        try:
            os.rename(stage, outdir)
        except OSError:
            if not manifest.exists():  # lost a race with another lab building the same thing: fine
                raise
    _prune(cache / "guest", keep=outdir)
    log.info("built lab guest %s (%s)", key, package)
    return GuestImage(outdir / "vmlinuz", outdir / "initrd.img", package, key)
