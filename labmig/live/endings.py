"""What a live migration does after its job, beyond checking it: the endings that need work.

    clean_source_disks        after a verified block migration, the source's copies of the
                              disks go (as Nova's post-migration clean-up does), unless the
                              source keeps the VM's definition (--keep-source)
    end_interrupted_postcopy  libvirt's job failed after the switch to post-copy: nothing can
                              roll it back, so wait for QEMU to finish it, then end as a
                              completed migration does (source definition and disks cleaned)

Both take the LiveMigration (``mig``) whose result they complete.
"""
from __future__ import annotations

from typing import Any

from ..model import MigrationResult, Outcome
from .rollback import Rollback, drop_source_definition, postcopy_settled, remove_source_disks


def end_interrupted_postcopy(mig: Any, result: MigrationResult, reason: str) -> None:
    """libvirt's job failed after the switch: wait for QEMU to finish it, then clean up as on success."""
    result.extra["rolled_back"] = False
    mig.note("postcopy", f"post-copy interrupted ({reason}): waiting up to {mig.postcopy_wait:.0f} s "
              f"for it to finish on {mig.destination.name}")
    if not postcopy_settled(mig, mig.postcopy_wait):
        result.outcome = Outcome.FAILED
        result.message = (f"post-copy failed after the switch ({reason}) and had not finished "
                          f"{mig.postcopy_wait:.0f} s later: the guest's memory is split between the hosts "
                          "and cannot be rolled back")
        return
    done = drop_source_definition(mig)
    verdict = Rollback(mig).verify_on_destination()
    result.outcome = Outcome.COMPLETED if verdict.ok else Outcome.FAILED
    result.message = (f"post-copy was interrupted ({reason}) and finished once the link was back. "
                      f"{verdict.message}" + (f"; {done}" if done else ""))
    mig.note("done" if verdict.ok else "failed", result.message)
    if verdict.ok and result.extra.get("block_migration"):
        clean_source_disks(mig, result)


def clean_source_disks(mig: Any, result: MigrationResult) -> None:
    """The source's copies of block-migrated disks go, unless its definition stays (--keep-source)."""
    assert mig.report is not None and mig.report.guest is not None
    if not mig.plan.options.undefine_source:
        result.extra["source_disks_kept"] = [d.path for d in mig.report.guest.disks if not d.shared]
        mig.note("source disks", f"the source's disk files stay on {mig.source.name} with its definition "
                  "(--keep-source); remove them before migrating the VM back there")
        return
    removed, kept = remove_source_disks(mig.source, mig.report.guest, mig.report.local_dirs_proven)
    result.extra["source_disks_removed"], result.extra["source_disks_kept"] = removed, kept
    if removed:
        mig.note("source disks", f"removed the source's copies on {mig.source.name}: {', '.join(removed)}")
    if kept:
        mig.note("source disks", f"kept on {mig.source.name} (not proven local, or could not be removed): "
                  f"{', '.join(kept)}")
