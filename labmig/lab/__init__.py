"""The real two-host libvirt lab on one machine (and the host set-up the Vagrant pair shares).

Map of the package:
    layout      LabLayout / HostLayout: every name, path and address, derived from the lab name
    netns       namespaces, veth link, bridges, tc shaping, running commands inside a host
    libvirtd    per-host libvirtd configuration, start/stop, capability warm-up
    sshd        per-host sshd and the lab's own keys (host-to-host ssh/scp)
    guestbuild  the guest kernel (Debian package, extracted) + busybox initramfs + workload
    guest       GuestSpec, domain XML, disk with boot counter, console parsing, UDP control
    probe       a client in the client namespace measuring the interruption it sees
    faults      FAULTS registry: link-cut, link-restore, link-slow, kill-libvirtd, kill-qemu, fill-disk
    local       LocalLab / LabHost / LabGuest: the API below
    host-packages.sh   Debian packages for a lab host (QEMU from backports); shared with vagrant/

API for the rest of labmig (root needed)::

    from labmig.lab import LocalLab, GuestSpec
    lab = LocalLab()                  # name: argument, else $LABMIG_LAB, else "labmig"
    lab.up(link_rate=None)            # idempotent; bytes/s limit on the inter-host link
    src, dst = lab.host("lab1"), lab.host("lab2")
    src.uri                           # qemu+unix:///system?socket=<run dir>/lab1/run-libvirt/libvirt-sock
    conn = src.connect()              # libvirt-python connection from the root namespace
    dst.migration_uri                 # qemu+tcp://10.77.0.2/system: for VIR_MIGRATE_PEER2PEER
    dst.address                       # 10.77.0.2 on the inter-host link (migration traffic)
    src.local_image_dir               # /var/lib/libvirt/images inside each host (a 1 GiB tmpfs each)
    src.outside(path)                 # that path seen from the root namespace
    lab.shared_image_dir              # same path on both hosts
    src.command(argv) / src.run(argv) # run on a host (its netns + mounts); src.ssh_argv("lab2", "ls")
    src.scp_argv(path, "lab2", path)  # run it with src.run(...): copy a file to the other host over ssh
    src.libvirtd_pid(); src.qemu_pid("guest1"); src.console_path("guest1"); src.domain_state("guest1")
    lab.accel                         # "tcg", or "kvm" when a boot probe at up succeeded (LABMIG_ACCEL forces)
    lab.shape_link(32 * 2**20)        # bytes/s, None lifts it; lab.link_rate
    g = lab.create_guest(GuestSpec(name="guest1", dirty_rate=20 * 2**20, wss=64 * 2**20,
                                   disk="shared" or "local"), host="lab1")   # boots, waits for READY
    g.address; g.disk; g.where(); g.running_on(); g.boot_counter(host)
    g.console(host)                   # ConsoleLog: .ready .heartbeats .memory_errors .panics .boot_count
    g.set_dirty_rate(n); g.set_working_set(n); g.stat()    # over UDP from the client namespace
    p = g.start_probe(interval=0.02); ...; report = p.stop()   # report.max_gap = client-seen interruption
    from labmig.lab.guest import netns_socket, heartbeat_socket   # sockets inside the lab's namespaces
    from labmig.lab.faults import FAULTS, inject; inject(lab, "kill-qemu", host="lab1", domain="guest1")
    lab.remove_guest("guest1"); lab.down(); lab.clean()

Notes for migration code:
    * The guest's console log is per host (``g.console("lab2")`` after a move).
    * libvirt 9 treats a disk on a local file system as unsafe to live-migrate even
      when it is shared, so shared-disk live migrations in this lab need
      ``VIR_MIGRATE_UNSAFE`` (:data:`SHARED_DISK_MIGRATE_FLAGS`); on the Vagrant pair the shared
      directory is real NFS and needs no flag. Copy-storage (``VIR_MIGRATE_NON_SHARED_DISK``)
      migrations of ``disk="local"`` guests need the target file created first on the
      destination (same path, same size).
    * Guest addresses are 10.78.0.(10+index); the lab's own tests use indexes 20-24, its
      benchmark 30 (in its own lab), so pick others for long-lived guests.
    * ``down`` empties the hosts' own image directories (1 GiB tmpfs each, so fill-disk
      is a real ENOSPC); shared images, definitions and keys stay until ``clean``.
"""
from .faults import FAULTS, inject
from .guest import ConsoleLog, GuestSpec, read_boot_counter
from .layout import DEFAULT_LAB, LabLayout, lab_name, make_layout
from .local import LabGuest, LabHost, LocalLab, UpReport

# libvirt.VIR_MIGRATE_UNSAFE, without importing libvirt here.
SHARED_DISK_MIGRATE_FLAGS = 1 << 9

__all__ = [
    "FAULTS", "inject", "ConsoleLog", "GuestSpec", "read_boot_counter", "LabGuest", "LabHost", "LocalLab",
    "UpReport", "DEFAULT_LAB", "LabLayout", "lab_name", "make_layout", "SHARED_DISK_MIGRATE_FLAGS",
]
