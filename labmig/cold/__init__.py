"""Cold migration: power off, copy the disks (delta, over ssh), define and boot on the target.

    journal    Journal / Step: every step on disk before it acts, so a crash is recoverable
    recovery   plan_recovery(): where a half-done migration must end (pure decision)
    domxml     the domain definition rewritten for the destination (xml.etree)
    migration  ColdPlan (plain data) and ColdMigration (the flow over libvirt + ssh),
               plus confirm / revert / recover
"""
