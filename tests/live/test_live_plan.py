"""LivePlan / LiveOptions: parsing, validation, and the libvirt flags and parameters they become."""
import libvirt
import pytest

from labmig.errors import InvalidInput
from labmig.live.plan import LiveOptions, LivePlan, PostcopyMode, bandwidth_mib


@pytest.mark.parametrize("text, kind, passes", [
    ("off", "off", 0), (None, "off", 0), ("now", "now", 0), ("after:3", "after", 3),
    ("on-timeout", "on-timeout", 0),
])
def test_postcopy_modes(text, kind, passes):
    mode = PostcopyMode.parse(text)
    assert (mode.kind, mode.passes) == (kind, passes)
    assert PostcopyMode.parse(str(mode)) == mode


@pytest.mark.parametrize("text", ["after:0", "after:x", "sometimes"])
def test_bad_postcopy_mode_names_the_choices(text):
    with pytest.raises(InvalidInput) as err:
        PostcopyMode.parse(text)
    assert "after:N" in err.value.hint


def test_options_parse_units():
    opts = LiveOptions(max_bandwidth="8MiB/s", max_downtime="300ms", completion_timeout="1min")
    assert opts.max_bandwidth == 8 * 2**20
    assert opts.max_downtime == pytest.approx(0.3)
    assert opts.completion_timeout == 60


@pytest.mark.parametrize("kwargs, word", [
    ({"max_bandwidth": "0MiB/s"}, "max bandwidth"),
    ({"max_downtime": "0ms"}, "downtime"),
    ({"compression": "lz4"}, "compression"),
    ({"compression": "zstd"}, "multifd"),
    ({"parallel_connections": -1}, "negative"),
    ({"timeout_action": "explode"}, "timeout action"),
    ({"compression": "xbzrle", "parallel_connections": 2}, "multifd"),
])
def test_bad_options_are_refused(kwargs, word):
    with pytest.raises(InvalidInput) as err:
        LiveOptions(**kwargs)
    assert word in str(err.value)
    assert err.value.hint


def test_strategy_names_follow_the_options():
    assert LiveOptions().strategy == "precopy"
    assert LiveOptions(postcopy="now").strategy == "postcopy"
    assert LiveOptions(postcopy="after:2").strategy == "hybrid"
    assert LiveOptions(auto_converge=True).strategy == "autoconverge"
    assert LiveOptions(compression="xbzrle").strategy == "compression"


def test_flags_like_nova():
    plan = LivePlan("vm", "lab1", "lab2", LiveOptions())
    flags = plan.flags(libvirt, block_migration=False)
    for f in (libvirt.VIR_MIGRATE_LIVE, libvirt.VIR_MIGRATE_PEER2PEER, libvirt.VIR_MIGRATE_PERSIST_DEST,
              libvirt.VIR_MIGRATE_UNDEFINE_SOURCE):
        assert flags & f
    for f in (libvirt.VIR_MIGRATE_NON_SHARED_DISK, libvirt.VIR_MIGRATE_POSTCOPY, libvirt.VIR_MIGRATE_AUTO_CONVERGE):
        assert not flags & f


def test_flags_for_every_option():
    opts = LiveOptions(postcopy="after:1", auto_converge=True, compression="zstd", parallel_connections=2,
                       persistent=False, undefine_source=False)
    flags = LivePlan("vm", "a", "b", opts).flags(libvirt, block_migration=True)
    for f in (libvirt.VIR_MIGRATE_NON_SHARED_DISK, libvirt.VIR_MIGRATE_POSTCOPY, libvirt.VIR_MIGRATE_AUTO_CONVERGE,
              libvirt.VIR_MIGRATE_COMPRESSED, libvirt.VIR_MIGRATE_PARALLEL):
        assert flags & f
    assert not flags & libvirt.VIR_MIGRATE_PERSIST_DEST
    assert not flags & libvirt.VIR_MIGRATE_UNDEFINE_SOURCE


def test_params():
    opts = LiveOptions(max_bandwidth="10MB/s", compression="zstd", parallel_connections=4)
    params = LivePlan("vm", "a", "b", opts).params(libvirt, "tcp://10.0.0.2", ["vda"])
    assert params == {"migrate_uri": "tcp://10.0.0.2", "bandwidth": 10, "compression": "zstd",
                      "parallel.connections": 4, "migrate_disks": ["vda"]}


def test_bandwidth_rounds_up_to_whole_mib():
    assert bandwidth_mib(1) == 1
    assert bandwidth_mib(2**20) == 1
    assert bandwidth_mib(2**20 + 1) == 2


def test_plan_needs_vm_and_destination():
    with pytest.raises(InvalidInput):
        LivePlan("", "a", "b")
    with pytest.raises(InvalidInput):
        LivePlan("vm", "a", "")
    assert LivePlan("vm", "a", "b").to_dict()["options"]["postcopy"] == "off"


def test_simulator_strategies_map_onto_live_options():
    opts = LiveOptions.from_strategy("autoconverge", {"cpu_throttle_initial": 40, "downtime_limit": "200ms"})
    assert opts.auto_converge and opts.auto_converge_initial == 40 and opts.max_downtime == pytest.approx(0.2)
    assert opts.strategy == "autoconverge"
    assert LiveOptions.from_strategy("postcopy").postcopy == PostcopyMode("now")
    assert LiveOptions.from_strategy("postcopy", {"postcopy_after_passes": 2}).postcopy == PostcopyMode("after", 2)
    hybrid = LiveOptions.from_strategy("hybrid", {"postcopy_after_passes": 0, "nova_policy": True,
                                                  "live_migration_timeout_action": "force_complete"})
    assert hybrid.postcopy.kind == "on-timeout" and hybrid.policy == "nova"
    assert hybrid.timeout_action == "force-complete" and hybrid.max_downtime == pytest.approx(0.5)
    comp = LiveOptions.from_strategy("compression", {"xbzrle": False, "multifd_channels": 2,
                                                     "max_bandwidth": "50MiB/s"})
    assert comp.compression is None and comp.parallel_connections == 2 and comp.max_bandwidth == 50 * 2**20
    assert LiveOptions.from_strategy("compression").compression == "xbzrle"
    for name in ("precopy", "postcopy", "hybrid", "autoconverge", "compression"):
        assert LiveOptions.from_strategy(name).strategy == name
    with pytest.raises(InvalidInput):
        LiveOptions.from_strategy("cold")
