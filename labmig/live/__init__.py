"""Live migration over libvirt, the way OpenStack Nova's libvirt driver does it, observable and safe.

    plan         LiveOptions, PostcopyMode, LivePlan (plain data → libvirt flags/params)
    prechecks    run_prechecks(): VM state, CPU, shared storage probe, memory, networks …
    policies     POLICIES registry: "nova" (downtime steps, completion timeout), "wait",
                 "postcopy-on-stall"; ConvergenceTracker; JobSample
    migration    LiveMigration context manager: run() → MigrationResult with a timeline
    rollback     Rollback (VM back on the source, destination clean), precreate_disks,
                 remove_source_disks, postcopy_settled
    endings      after the job: the source's disks cleaned after a block migration, an
                 interrupted post-copy waited for and finished
    progress     LiveProgress: a one-line terminal view of a running migration
    probe        LabClientProbe: the lab client's view (longest gap in answers)
    faultcases   FAULT_CASES and run_case(): the fault matrix on the local lab
    faultcheck   Trial and the end-of-trial checks (both hosts, the disk, the guest's memory)
    faultprocs   CLI_CASES (SIGINT, SIGKILL, a second process) and round_trip()

    with LiveMigration(LivePlan("vm1", "lab1", "lab2", LiveOptions(max_bandwidth="50MiB/s"))) as mig:
        result = mig.run()
"""
from __future__ import annotations

from .migration import LiveMigration
from .plan import LiveOptions, LivePlan, PostcopyMode
from .policies import POLICIES

__all__ = ["LiveOptions", "LivePlan", "PostcopyMode", "POLICIES", "LiveMigration"]
