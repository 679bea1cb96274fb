"""Cold migration: power off, copy the disks (delta, over ssh), define and boot on the target.

    journal    Journal / Step: every step on disk before it acts, so a crash is recoverable
    recovery   plan_recovery(): where a half-done migration must end (a pure decision)
    domxml     the domain definition read and rewritten for the destination (xml.etree)
    sides      ColdHost: a host's image / shared / log directories and ssh access
    hostops    the libvirt operations (idempotent), observe(), execute_recovery()
    migration  ColdRunOptions, ColdPlan (plain data) and ColdMigration (the flow)
    finish     confirm(), revert(), recover()
    trials     lab experiments: guests with real data, kill-and-recover trials

The destination side of the disk copy lives in :mod:`labmig.remote`.
"""
