"""Which accelerator the lab's guests use: KVM only where a guest really boots on it.

    choose()       "kvm" or "tcg": $LABMIG_ACCEL if set, else the (cached) boot probe
    probe_kvm()    boot the lab guest with -accel kvm for a few seconds, look for its ready marker

Some machines have a /dev/kvm whose (paravirtual) KVM a stock guest kernel does not
boot on; so the presence of /dev/kvm proves nothing and a short real boot decides.
The answer is cached per machine boot and QEMU version.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import time
from pathlib import Path

from ..errors import InvalidInput

log = logging.getLogger(__name__)

READY = b"LABMIG READY"


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def probe_kvm(kernel: Path, initrd: Path, timeout: float = 8.0) -> bool:
    """True when the guest prints its ready marker under KVM within ``timeout`` seconds."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    argv = ["qemu-system-x86_64", "-accel", "kvm", "-machine", "pc", "-cpu", "host", "-m", "192",
            "-nographic", "-no-reboot", "-nodefaults", "-serial", "stdio", "-net", "none",
            "-kernel", str(kernel), "-initrd", str(initrd),
            "-append", "console=ttyS0 quiet panic=-1 labmig.wss=1048576 labmig.disk=/dev/null"]
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    except OSError:
        return False
    assert proc.stdout is not None  # stdout=PIPE
    os.set_blocking(proc.stdout.fileno(), False)
    seen = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            chunk = proc.stdout.read() or b""
            seen = (seen + chunk)[-4096:]
            if READY in seen:
                return True
            time.sleep(0.1)
        return READY in seen + (proc.stdout.read() or b"")
    finally:
        proc.kill()
        proc.wait()


def choose(kernel: Path, initrd: Path, cache: Path) -> str:
    forced = os.environ.get("LABMIG_ACCEL")
    if forced:
        if forced not in ("kvm", "tcg"):
            raise InvalidInput(f"LABMIG_ACCEL={forced!r} is not an accelerator", hint="use kvm or tcg")
        return forced
    if not os.path.exists("/dev/kvm"):
        return "tcg"
    qemu = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    key = f"{_boot_id()} {qemu} {kernel.stat().st_size}"
    record = cache / "accel.json"
    try:
        saved = json.loads(record.read_text())
        if saved.get("key") == key:
            return saved["accel"]
    except (OSError, ValueError, KeyError):
        pass
    t = time.monotonic()
    accel = "kvm" if probe_kvm(kernel, initrd) else "tcg"
    log.info("KVM boot probe: %s (%.1f s)", accel, time.monotonic() - t)
    cache.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps({"key": key, "accel": accel}))
    return accel
