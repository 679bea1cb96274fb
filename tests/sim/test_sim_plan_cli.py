"""Plans as plain data, the workloads' shapes, and the `labmig simulate` command."""
import argparse
import json

import numpy as np
import pytest

from labmig import core
from labmig.commands import simulate as simcmd
from labmig.errors import InvalidInput
from labmig.sim.plan import PARAMETERS, VM, Plan, Workload
from labmig.sim.run import simulate
from labmig.sim.workloads import WORKLOADS, HotColdWorkload, SequentialWorkload, make_workload

GiB, MiB = 1 << 30, 1 << 20


def cli(*argv):
    parser = argparse.ArgumentParser(prog="labmig")
    sub = parser.add_subparsers(dest="command")
    simcmd.register(sub)
    args = parser.parse_args(["simulate", *argv])
    return args.func(args)


# -- plans -------------------------------------------------------------------
def test_plan_round_trips_and_reads_units():
    plan = Plan.from_dict({"vm": {"memory": "8GiB", "page_size": "4KiB"},
                           "workload": {"kind": "uniform", "dirty_rate": "200MiB/s", "wss": "1GiB"},
                           "link": {"link_rate": "10Gbit/s", "rtt": "1ms"},
                           "strategy": "autoconverge", "options": {"cpu_throttle_initial": 30}, "seed": 5})
    assert plan.vm.memory == 8 * GiB and plan.workload.dirty_rate == 200 * MiB
    assert plan.link.link_rate == 1.25e9 and plan.link.rtt == 0.001
    assert Plan.from_json(plan.to_json()) == plan
    text = plan.describe()
    assert "autoconverge" in text and "8.00 GiB" in text and "cpu_throttle_initial=30" in text


@pytest.mark.parametrize("data,needle", [
    ({"vm": {"memory": "8XB"}}, "unknown unit"),
    ({"vm": {"page_size": 3000}}, "vm.page_size"),
    ({"workload": {"wss": "16GiB"}}, "workload.wss"),
    ({"link": {"link_rate": 0}}, "link.link_rate"),
    ({"max_bandwidth": "-1MiB/s"}, "max_bandwidth"),
    ({"vm": {"colour": "red"}}, "unknown keys in plan section 'vm'"),
    ({"speed": 3}, "unknown plan keys"),
    ({"workload": {"hot_share": 1.5}}, "workload.hot_share"),
])
def test_bad_plans_name_the_field(data, needle):
    with pytest.raises(InvalidInput, match=needle) as info:
        Plan.from_dict(data)
    assert info.value.hint


def test_with_param_uses_cli_names():
    plan = Plan().with_param("dirty-rate", "1GiB/s").with_param("link-rate", "25Gbit/s")
    assert plan.workload.dirty_rate == GiB and plan.link.link_rate == 25e9 / 8
    assert Plan().with_param("downtime_limit", "50ms").options == {"downtime_limit": "50ms"}
    assert Plan().with_param("max-bandwidth", "50MiB/s").max_bandwidth == 50 * MiB
    assert set(PARAMETERS) >= {"memory", "wss", "dirty-rate", "link-rate", "max-bandwidth", "rtt", "storage", "seed"}


def test_old_word_bandwidth_is_read_as_the_link_rate_with_a_warning():
    with pytest.warns(FutureWarning, match="link_rate"):
        assert Plan.from_dict({"link": {"bandwidth": "1Gbit/s"}}).link.link_rate == 1e9 / 8
    with pytest.warns(FutureWarning, match="link-rate"):
        assert Plan().with_param("bandwidth", "8Gbit/s").link.link_rate == 1e9
    with pytest.warns(FutureWarning, match="max_bandwidth"):
        old = Plan.from_dict({"options": {"max_bandwidth": "50MiB/s"}})
    assert old.max_bandwidth == 50 * MiB and old.options == {}


def test_a_dirty_rate_without_a_workload_means_uniform_writes():
    """The rule of every entry point: a dirty rate is writes, so no workload kind means uniform."""
    assert Plan().with_param("dirty-rate", "200MiB/s").workload.kind == "uniform"
    assert Plan.from_dict({"workload": {"dirty_rate": "200MiB/s"}}).workload.kind == "uniform"
    assert Plan.from_dict({"workload": {"dirty_rate": "200MiB/s", "kind": "hotcold"}}).workload.kind == "hotcold"
    assert Plan().with_param("memory", "1GiB").workload.kind == "idle"


# -- workloads -----------------------------------------------------------------
def collect(workload, dt, speed=1.0):
    bm = core.new_bitmap(workload.pages)
    workload.touch(dt, speed, lambda idx: core.set_bits(bm, idx))
    return bm


def test_registry_has_the_workloads():
    assert set(WORKLOADS) == {"idle", "uniform", "hotcold", "sequential", "trace"}


def test_sequential_dirties_exact_distinct_pages_and_wraps():
    plan = Plan(vm=VM(memory=1000 * 4096), workload=Workload(kind="sequential", dirty_rate=300 * 4096, wss=700 * 4096))
    wl = SequentialWorkload(plan, np.random.default_rng(0))
    assert core.popcount(collect(wl, 1.0), 1000) == 300
    assert core.popcount(collect(wl, 0.5, speed=0.5), 1000) == 75
    bm = collect(wl, 1.5)  # from page 375, 450 pages: wraps past 700
    idx = np.empty(1000, dtype=np.int64)
    n, _ = core.find_set_bits(bm, 1000, 0, idx)
    assert n == 450 and idx[0] == 0 and idx[n - 1] == 699 and 124 in idx[:n] and 125 not in idx[:n]


def test_hotcold_puts_the_share_of_writes_on_the_hot_set():
    plan = Plan(vm=VM(memory=GiB), workload=Workload(kind="hotcold", dirty_rate=50 * MiB, wss=GiB,
                                                      hot_fraction=0.1, hot_share=0.9))
    wl = HotColdWorkload(plan, np.random.default_rng(3))
    bm = collect(wl, 0.2)
    pages, hot = plan.vm.pages, plan.vm.pages // 10
    hot_dirty = core.popcount(bm[: (hot + 63) // 64], hot)
    cold_dirty = core.popcount(bm, pages) - hot_dirty
    writes = 50 * MiB / 4096 * 0.2
    assert hot_dirty == pytest.approx(hot * -np.expm1(-0.9 * writes / hot), rel=0.03)
    assert cold_dirty == pytest.approx((pages - hot) * -np.expm1(-0.1 * writes / (pages - hot)), rel=0.05)


def test_trace_replays_counts_and_bitmaps(tmp_path):
    counts = tmp_path / "t.json"
    counts.write_text(json.dumps({"interval": 1.0, "dirty_pages": [100, 0, 400]}))
    plan = Plan(vm=VM(memory=4096 * 4096), workload=Workload(kind="trace", trace=str(counts)))
    wl = make_workload(plan, np.random.default_rng(1))
    assert core.popcount(collect(wl, 1.0), 4096) == pytest.approx(100, abs=30)
    assert core.popcount(collect(wl, 1.0), 4096) == 0
    assert core.popcount(collect(wl, 1.0), 4096) == pytest.approx(400, abs=60)
    rows = np.zeros((2, 64), dtype=np.uint64)
    rows[0, 0] = 0b1011
    rows[1, 3] = 1
    bitmaps = tmp_path / "t.npz"
    np.savez(bitmaps, interval=0.5, bitmaps=rows)
    wl = make_workload(Plan(vm=VM(memory=4096 * 4096), workload=Workload(kind="trace", trace=str(bitmaps))),
                       np.random.default_rng(1))
    first = collect(wl, 0.5)
    assert first[0] == 0b1011 and core.popcount(first, 4096) == 3
    assert core.popcount(collect(wl, 1.0), 4096) == 4  # rows 1 and 0 again (it loops)
    result = simulate(Plan(vm=VM(memory=4096 * 4096), workload=Workload(kind="trace", trace=str(counts))))
    assert result.completed


def test_trace_replays_a_saved_result_of_a_real_run(tmp_path):
    from labmig.model import MigrationResult, Outcome, TimelinePoint

    recorded = MigrationResult(kind="live", strategy="precopy", backend="libvirt", outcome=Outcome.COMPLETED,
                               total_time=3.0, downtime=0.1, timeline=[
                                   TimelinePoint(t=1.0, phase="precopy", dirty_rate=300 * 4096),
                                   TimelinePoint(t=3.0, phase="precopy", dirty_rate=0.0),
                                   TimelinePoint(t=3.1, phase="stop-and-copy")])
    path = tmp_path / "run.json"
    path.write_text(recorded.to_json())
    wl = make_workload(Plan(vm=VM(memory=1 << 30), workload=Workload(kind="trace", trace=str(path))),
                       np.random.default_rng(2))
    assert core.popcount(collect(wl, 0.5), wl.pages) == pytest.approx(150, abs=40)
    assert core.popcount(collect(wl, 2.5), wl.pages) == pytest.approx(150, abs=40)  # 0.5 s at 300/s, then 0
    assert core.popcount(collect(wl, 1.0), wl.pages) == pytest.approx(300, abs=60)  # looped


def test_trace_errors_say_what_to_give(tmp_path):
    with pytest.raises(InvalidInput, match="not found"):
        simulate(Plan(workload=Workload(kind="trace", trace=str(tmp_path / "none.json"))))
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(InvalidInput, match="dirty_pages"):
        simulate(Plan(workload=Workload(kind="trace", trace=str(bad))))


# -- the command -------------------------------------------------------------
def test_cli_runs_the_issue_example(capsys):
    assert cli("--memory", "8GiB", "--wss", "1GiB", "--dirty-rate", "200MiB/s", "--link-rate", "10Gbit/s",
               "--downtime-limit", "300ms", "--strategy", "precopy", "--workload", "uniform", "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["outcome"] == "completed" and data["strategy"] == "precopy"
    assert data["plan"]["vm"]["memory"] == 8 * GiB and data["downtime"] <= 0.3


def test_cli_table_csv_and_plot(tmp_path, capsys):
    csv, png = tmp_path / "t.csv", tmp_path / "t.png"
    assert cli("--memory", "1GiB", "--workload", "uniform", "--dirty-rate", "100MiB/s", "--show-plan",
               "--csv", str(csv), "--plot", str(png)) == 0
    out = capsys.readouterr().out
    assert "plan: precopy" in out and "outcome" in out and "completed" in out
    assert csv.read_text().startswith("t,phase,")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_sweep_prints_one_row_per_value(tmp_path, capsys):
    png, table = tmp_path / "s.png", tmp_path / "s.csv"
    assert cli("--memory", "2GiB", "--workload", "uniform", "--wss", "1GiB", "--dirty-rate", "1GiB/s",
               "--sweep", "strategy=precopy,postcopy,autoconverge,cold", "--sweep", "link-rate=5Gbit/s,10Gbit/s",
               "--cpu-throttle-initial", "30", "--plot", str(png), "--csv", str(table)) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["strategy", "link-rate", "outcome"]
    assert len(lines) == 2 + 8
    assert png.stat().st_size > 1000
    rows = table.read_text().splitlines()
    assert rows[0].startswith("strategy,link-rate,outcome,total_time") and len(rows) == 9
    assert rows[-1].startswith("cold,10Gbit/s,completed,")


def test_cli_rejects_options_of_other_strategies():
    with pytest.raises(InvalidInput, match="does not apply to strategy 'precopy'"):
        cli("--xbzrle-cache-size", "1GiB")
    with pytest.raises(InvalidInput, match="unknown parameter"):
        cli("--sweep", "colour=red,blue")
    with pytest.raises(InvalidInput, match="cannot read --sweep"):
        cli("--sweep", "link-rate")


def test_cli_sweep_range_gives_evenly_spaced_values(capsys):
    assert cli("--memory", "1GiB", "--workload", "uniform", "--sweep", "dirty-rate=100MiB/s..1GiB/s:4",
               "--json") == 0
    runs = json.loads(capsys.readouterr().out)
    rates = [r["result"]["plan"]["workload"]["dirty_rate"] for r in runs]
    assert rates == pytest.approx([100 * MiB, 408 * MiB, 716 * MiB, 1024 * MiB])
    assert [r["params"]["dirty-rate"] for r in runs][0] == "838.86 Mbit/s"
    with pytest.raises(InvalidInput, match="FROM..TO:N"):
        cli("--sweep", "memory=1GiB..2GiB")


def test_through_the_labmig_entry_point(capsys):
    from labmig.cli import main

    assert main(["simulate", "--memory", "1GiB", "--strategy", "postcopy", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["strategy"] == "postcopy"
    assert main(["simulate", "--link-rate", "fast"]) == 2
    err = capsys.readouterr().err
    assert "link-rate" in err and "hint:" in err


def test_help_lists_strategies_workloads_and_options(capsys):
    with pytest.raises(SystemExit) as info:
        cli("--help")
    assert info.value.code == 0
    out = capsys.readouterr().out
    for word in ("autoconverge", "hotcold", "--cpu-throttle-initial", "--xbzrle-cache-size", "--sweep"):
        assert word in out
