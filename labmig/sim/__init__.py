"""The migration simulator: plans made real in virtual time.

    run              simulate(plan): run plan.strategy on plan; returns a
                     labmig.model.MigrationResult (``from labmig.sim.run import simulate``)
    clock            Clock and Agenda: exact, deterministic virtual time
    workloads        WORKLOADS: how the guest dirties pages (through the core's bitmaps)
    engine           LiveEngine: QEMU's RAM migration mechanics on dirty bitmaps
    analytic         the closed-form model the engine is tested against

The strategies (policies deciding when to switch over, throttle, switch to
post-copy, give up) live in :mod:`labmig.strategies` and are written on the engine.
Imports run one way: clock, workloads, engine, analytic <- strategies <- run. This
package's ``__init__`` therefore imports nothing: importing the engine runs it first, and
an import of the strategies here would close a cycle.
"""
