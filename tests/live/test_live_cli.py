"""The migrate/abort/status command line: arguments in virsh's and the simulator's words → LiveOptions."""
import pytest

from labmig.cli import build_parser
from labmig.commands.migrate import options_from_args
from labmig.errors import InvalidInput


def parse(*argv):
    return build_parser().parse_args(list(argv))


def test_live_options_from_the_command_line():
    args = parse("migrate", "live", "vm1", "--to", "lab2", "--max-bandwidth", "20MiB/s", "--max-downtime", "200ms",
                 "--postcopy", "after:2", "--auto-converge", "--cpu-throttle-initial", "50", "--block-migration",
                 "--no-persist", "--keep-source", "--policy", "wait", "--completion-timeout", "90s",
                 "--timeout-action", "force-complete")
    opts = options_from_args(args)
    assert (args.vm, args.to, args.source) == ("vm1", "lab2", None)
    assert opts.max_bandwidth == 20 * 2**20 and opts.max_downtime == pytest.approx(0.2)
    assert str(opts.postcopy) == "after:2" and opts.auto_converge and opts.auto_converge_initial == 50
    assert opts.block_migration is True and not opts.persistent and not opts.undefine_source
    assert opts.policy == "wait" and opts.completion_timeout == 90 and opts.timeout_action == "force-complete"


def test_simulator_names_are_aliases():
    opts = options_from_args(parse("migrate", "live", "vm1", "--to", "lab2", "--max-bandwidth", "1Gbit/s",
                                   "--downtime-limit", "0.3", "--multifd-channels", "4", "--shared-storage"))
    assert opts.max_bandwidth == 125e6 and opts.max_downtime == pytest.approx(0.3)
    assert opts.parallel_connections == 4 and opts.block_migration is False


def test_bad_values_are_refused_by_name():
    with pytest.raises(InvalidInput, match="post-copy mode"):
        options_from_args(parse("migrate", "live", "vm1", "--to", "lab2", "--postcopy", "later"))
    with pytest.raises(SystemExit):
        parse("migrate", "live", "vm1", "--to", "lab2", "--policy", "nope")
    with pytest.raises(SystemExit):
        parse("migrate", "live", "vm1", "--block-migration", "--shared-storage", "--to", "lab2")


def test_abort_and_status_are_commands():
    assert parse("abort", "vm1").vm == "vm1"
    assert parse("status", "--json", "--host", "qemu:///system").host == ["qemu:///system"]
