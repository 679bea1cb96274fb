"""The libvirt and helper operations cold migration performs, one small method each.

    HostOps            lookup (by name or UUID), xml, define, undefine, start, destroy,
                       graceful-then-forced shutdown, network check — each under the
                       host's watchdog, each idempotent where recovery needs it
    observe()          where the VM is defined / running on both hosts (recovery input)
    execute_recovery() carries out a RecoveryPlan's actions in order (none for an
                       "unknown" plan); one that deletes source disks checks them first
    recover_journal()  the whole recovery of one journal: observe, decide, act, record
                       the end step and archive the journal (rollback, confirm, revert,
                       `labmig recover` all go through it)
    agent_for()        starts the disk helper on a host through ssh
    copy_disk()        one disk's delta copy to a helper (see labmig.remote.destination)
    check_source_disks_deletable()  before ``confirm --delete-source-disks`` removes a
                       source disk: its destination copy exists, is complete, and is
                       another file (labmig.remote.samefile); otherwise nothing is deleted
"""
from __future__ import annotations

import contextlib
import logging
import time
from typing import Any, Callable

from ..errors import PrecheckFailed
from ..hosts import Host
from . import recovery as R
from .journal import Journal, JournalState, Step
from .sides import ColdHost

log = logging.getLogger(__name__)


def _libvirt() -> Any:
    import libvirt
    return libvirt


class HostOps:
    def __init__(self, host: Host) -> None:
        self.host = host

    def conn(self) -> Any:
        return self.host.connect()

    def host_uuid(self) -> str:
        return self.host.host_uuid()

    def lookup(self, name: str) -> Any | None:
        return self.host.domain(name)

    def lookup_uuid(self, uuid: str) -> Any | None:
        libvirt = _libvirt()
        if not uuid:
            return None
        try:
            return self.host.call("looking up a UUID", self.conn().lookupByUUIDString, uuid)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise

    def find(self, name: str, uuid: str = "") -> Any | None:
        return self.lookup_uuid(uuid) if uuid else self.lookup(name)

    def xml(self, dom: Any) -> str:
        libvirt = _libvirt()
        return self.host.call("reading the definition", dom.XMLDesc,
                              libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE)

    def is_active(self, dom: Any | None) -> bool:
        return bool(dom is not None and self.host.call("reading state", dom.isActive))

    def has_network(self, name: str) -> bool:
        libvirt = _libvirt()
        try:
            net = self.host.call(f"looking up network {name}", self.conn().networkLookupByName, name)
            return bool(net.isActive())
        except libvirt.libvirtError:
            return False

    def disk_user(self, path: str) -> str | None:
        """The name of a VM defined here that uses the file ``path`` as a disk, if any."""
        from .domxml import read_disks

        conn = self.conn()
        for dom in self.host.call("listing VMs", conn.listAllDomains, 0):
            if any(d.path == path for d in read_disks(self.xml(dom))):
                return str(dom.name())
        return None

    def define(self, xml: str) -> Any:
        return self.host.call("defining the VM", self.conn().defineXML, xml)

    def undefine(self, name: str, uuid: str = "") -> None:
        dom = self.find(name, uuid)
        if dom is not None:
            self.host.call(f"undefining {name}", dom.undefine)

    def start(self, name: str, uuid: str = "") -> None:
        dom = self.find(name, uuid)
        if dom is not None and not self.is_active(dom):
            self.host.call(f"starting {name}", dom.create, timeout=60)

    def destroy(self, name: str, uuid: str = "") -> None:
        libvirt = _libvirt()
        dom = self.find(name, uuid)
        if dom is not None and self.is_active(dom):
            try:
                self.host.call(f"stopping {name}", dom.destroy, timeout=60)
            except libvirt.libvirtError as exc:
                if self.is_active(dom):
                    raise
                log.debug("destroy raced with shutdown: %s", exc)

    def shutdown(self, name: str, timeout: float) -> bool:
        """ACPI shutdown, forced off after ``timeout``; True when it had to be forced."""
        libvirt = _libvirt()
        dom = self.lookup(name)
        if dom is None or not self.is_active(dom):
            return False
        if timeout > 0:
            try:
                self.host.call(f"shutting down {name}", dom.shutdown)
            except libvirt.libvirtError as exc:
                log.info("graceful shutdown of %s refused: %s", name, exc)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if not self.is_active(dom):
                    return False
                time.sleep(0.1)
        self.destroy(name)
        return True


def observe(src: HostOps, dst: HostOps, plan: dict[str, Any]) -> R.Observed:
    vm, uuid = plan["vm"], plan.get("uuid", "")
    s, d = src.find(vm, uuid), dst.find(vm, uuid)
    return R.Observed(src_defined=s is not None, src_active=src.is_active(s),
                      dst_defined=d is not None, dst_active=dst.is_active(d))


def execute_recovery(rplan: R.RecoveryPlan, state: JournalState, src: ColdHost, dst: ColdHost) -> None:
    """Carry out ``rplan``'s actions in order; an "unknown" plan does nothing.

    A plan that deletes the source disks first checks, before any action, that each
    destination copy exists, is complete and is another file
    (:func:`check_source_disks_deletable`): refused, nothing has changed.
    """
    if rplan.unknown:
        return
    plan = state.plan
    vm, uuid = plan["vm"], plan.get("uuid", "")
    s, d = HostOps(src.host), HostOps(dst.host)
    local = [disk for disk in plan.get("disks", []) if disk.get("kind") == "local"]
    deleting = R.DELETE_SOURCE_DISKS in rplan.actions and bool(local)
    with contextlib.ExitStack() as agents:
        if deleting:
            src_agent = agents.enter_context(agent_for(src))
            dst_agent = agents.enter_context(agent_for(dst))
            check_source_disks_deletable(local, src_agent, dst_agent)
        for action in rplan.actions:
            log.info("recover %s: %s", vm, action)
            if action == R.DESTROY_DEST:
                d.destroy(vm, uuid)
            elif action == R.UNDEFINE_DEST:
                d.undefine(vm, uuid)
            elif action == R.DEFINE_SOURCE:
                s.define(plan["source_xml"])
            elif action == R.START_SOURCE:
                s.start(vm, uuid)
            elif action == R.DESTROY_SOURCE:
                s.destroy(vm, uuid)
            elif action == R.UNDEFINE_SOURCE:
                s.undefine(vm, uuid)
            elif action == R.DEFINE_DEST:
                d.define(plan["dest_xml"])
            elif action == R.START_DEST:
                d.start(vm, uuid)
            elif action == R.DELETE_SOURCE_DISKS:
                if deleting:      # checked above, before the first action
                    for disk in local:
                        src_agent.call("remove", path=disk["src"])
            else:
                raise ValueError(action)


def recover_journal(journal: Journal, state: JournalState, src: ColdHost, dst: ColdHost) -> R.RecoveryPlan:
    """Bring the VM of ``journal`` to exactly one host and return what was decided.

    Reads where the VM is on both hosts, decides with :func:`~labmig.cold.recovery.plan_recovery`,
    carries the actions out, then writes the plan's final step and archives the journal; a plan
    without a final step (awaiting confirm, or "unknown": what the hosts show fits no state the
    journal allows, so nothing was done) leaves the journal open.
    """
    rplan = R.plan_recovery(state, observe(HostOps(src.host), HostOps(dst.host), state.plan))
    if rplan.unknown:
        log.warning("recover %s: %s", state.vm, rplan.reason)
    else:
        log.info("recover %s: %s", state.vm, rplan.reason)
    try:
        execute_recovery(rplan, state, src, dst)
    except PrecheckFailed as exc:
        if state.last != Step.CONFIRM_STARTED:
            raise
        return _confirm_called_off(journal, state, exc)
    if rplan.final_step:
        journal.append(rplan.final_step)
        journal.archive()
    return rplan


def _confirm_called_off(journal: Journal, state: JournalState, refused: PrecheckFailed) -> R.RecoveryPlan:
    """A confirm with --delete-source-disks whose disk check now fails: back to awaiting confirm.

    The check runs before any action, so nothing has changed. Finishing the confirm would
    keep a VM whose destination disks did not check out and drop the source's definition;
    retrying it would fail the same way every time. The journal goes back to the state
    the user chose from (guest up on the destination), and revert stays possible.
    """
    journal.append(Step.GUEST_UP, confirm_called_off=refused.message)
    reason = (f"the confirm with --delete-source-disks was called off: {refused.message}; nothing changed, "
              "the VM awaits confirm again")
    hint = (f"`labmig revert {state.vm}` goes back to the untouched source disks; `labmig confirm {state.vm}` "
            "(without --delete-source-disks) keeps it on the destination and its source disks too")
    return R.RecoveryPlan("destination", [], None, reason, hint)


def agent_for(side: ColdHost) -> Any:
    """A started disk helper on ``side`` (through ssh when the host has an ssh address)."""
    from ..remote.ssh import SshAgent, SshTarget

    target = side.ssh or SshTarget(address=None)
    return SshAgent(target, list(side.image_dirs)).start()


def copy_disk(src_path: str, agent: Any, dst_path: str, block_size: int, verify: str,
              on_progress: Callable[[int, int], None] | None = None, show_progress: bool = False) -> dict[str, Any]:
    from ..remote.destination import copy_disk as remote_copy

    return remote_copy(src_path, agent, dst_path, block_size=block_size, verify=verify,
                       on_progress=on_progress, show_progress=show_progress)


def check_source_disks_deletable(disks: list[dict[str, Any]], src_agent: Any, dst_agent: Any) -> None:
    """Refuse (PrecheckFailed, nothing deleted) unless every disk's destination copy can replace it.

    ``disks`` are the journal's disk records (``src``, ``dst``, ``target``); the copy must
    exist on the destination, carry no incomplete mark, be a regular file, and be another
    file than the source (same inode, or the token test of labmig.remote.samefile).
    """
    from ..remote.samefile import HelperView, same_file

    source = HelperView(src_agent)
    problems = []
    for disk in disks:
        name = f"{disk.get('target') or 'disk'} ({disk['dst']})"
        st = dst_agent.call("stat", path=disk["dst"])[0]
        if not st["exists"]:
            problems.append(f"{name} does not exist on the destination")
        elif st["incomplete"]:
            problems.append(f"{name} on the destination is incomplete (its copy was never verified)")
        elif st.get("problem"):
            problems.append(f"{name} on the destination {st['problem']}")
        else:
            how = same_file(dst_agent, disk["dst"], source, disk["src"])
            if how is not None:
                problems.append(f"{name} on the destination is the source disk {disk['src']} itself ({how}): "
                                "the hosts share this storage")
    if problems:
        raise PrecheckFailed("not deleting the source disks: " + "; ".join(problems),
                             "confirm without --delete-source-disks (the source disks stay), "
                             "or copy the disks again")
