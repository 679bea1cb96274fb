"""sshd on each lab host, with keys the lab makes, so hosts can copy to each other.

    ensure_keys()   a client key, one host key per host, authorized_keys, known_hosts, ssh config
    start()/stop()/pid()   sshd inside a host's namespaces, listening on its link address only
    ssh_argv()      argv for `ssh` from one host to another (run it inside the source host)

Nothing here reads or changes the machine's own ssh set-up: every file lives in
the lab's state directory and each sshd is started with its own config file.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from ..errors import LabError
from .layout import HostLayout, LabLayout
from .netns import host_cmd, run

SSHD = "/usr/sbin/sshd"


def config_path(layout: LabLayout) -> Path:
    return layout.ssh_dir / "config"


def ensure_keys(layout: LabLayout) -> None:
    d = layout.ssh_dir
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    if not (d / "id_ed25519").exists():
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"labmig-{layout.name}", "-f", str(d / "id_ed25519")])
    known = []
    for h in layout.hosts:
        key = d / f"{h.name}_host_ed25519_key"
        if not key.exists():
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", h.name, "-f", str(key)])
        pub = (d / f"{key.name}.pub").read_text().split()
        known.append(f"{h.name},{h.link_addr} {pub[0]} {pub[1]}")
        (d / f"sshd_{h.name}_config").write_text(f"""\
ListenAddress {h.link_addr}
Port 22
HostKey {key}
PidFile {h.run_dir / 'sshd.pid'}
AuthorizedKeysFile {d / 'authorized_keys'}
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PrintMotd no
Subsystem sftp internal-sftp
""")
    (d / "authorized_keys").write_text((d / "id_ed25519.pub").read_text())
    (d / "known_hosts").write_text("\n".join(known) + "\n")
    names = " ".join(h.name for h in layout.hosts) + " " + " ".join(h.link_addr for h in layout.hosts)
    config_path(layout).write_text(f"""\
Host {names}
    User root
    IdentityFile {d / 'id_ed25519'}
    IdentitiesOnly yes
    UserKnownHostsFile {d / 'known_hosts'}
    StrictHostKeyChecking yes
    BatchMode yes
    ConnectTimeout 5
""")


def pid(host: HostLayout) -> int | None:
    try:
        p = int((host.run_dir / "sshd.pid").read_text().strip())
        with open(f"/proc/{p}/comm") as f:
            return p if f.read().strip() == "sshd" else None
    except (OSError, ValueError):
        return None


def start(layout: LabLayout, host: HostLayout, timeout: float = 10.0) -> int:
    current = pid(host)
    if current:
        return current
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
    proc = subprocess.run(host_cmd(host) + [SSHD, "-f", str(layout.ssh_dir / f"sshd_{host.name}_config")],
                          capture_output=True, text=True, check=False, timeout=timeout)
    if proc.returncode != 0:
        raise LabError(f"sshd did not start on {host.name}: {proc.stderr.strip()}",
                       hint="is openssh-server installed? `labmig lab up` installs it")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        p = pid(host)
        if p:
            return p
        time.sleep(0.05)
    raise LabError(f"sshd on {host.name} wrote no pid file")


def stop(host: HostLayout) -> bool:
    p = pid(host)
    if p:
        os.kill(p, signal.SIGTERM)
        return True
    return False


def ssh_argv(layout: LabLayout, to: HostLayout, *command: str) -> list[str]:
    """``ssh`` to ``to`` with the lab's keys; run it inside another host (see LabHost.run)."""
    return ["ssh", "-F", str(config_path(layout)), to.name, *command]
