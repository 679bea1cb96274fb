"""Shared storage found on the real lab when nothing says it is shared (as for hosts given by URI).

lab2 is described with lab1's image directory (as this process sees it) for its own and
no shared directories: its helper, in lab2's namespaces over ssh, then sees lab1's disk.
The pre-checks must call the disk shared (not copied), and a copy onto it is refused.
"""
import os

import pytest

from labmig.cold.hostops import agent_for
from labmig.cold.migration import ColdMigration, ColdPlan, ColdRunOptions
from labmig.cold.sides import cold_host
from labmig.cold.trials import disk_digest, make_guest
from labmig.errors import InvalidInput
from labmig.remote.destination import copy_disk

pytestmark = pytest.mark.lab


@pytest.fixture
def guest(lab, tmp_path, monkeypatch):
    monkeypatch.setenv("LABMIG_JOURNAL_DIR", str(tmp_path / "journal"))
    g = make_guest(lab, "coldsf", 66)
    yield g
    lab.remove_guest("coldsf")


def test_a_disk_the_destination_already_sees_is_not_copied(lab, guest):
    disk = str(guest.disk_outside("lab1"))
    before = disk_digest(disk)
    src = cold_host("lab1", shared_dirs=[])
    dst = cold_host("lab2", image_dirs=[os.path.dirname(disk)], shared_dirs=[])
    plan = ColdPlan("coldsf", "lab1", "lab2", ColdRunOptions(shutdown_timeout="1s"))
    with ColdMigration(plan, source=src, destination=dst) as mig:
        checks = mig.precheck()
        assert [d.kind for d in mig.disks] == ["shared"], checks
        assert any("source's own file" in c for c in checks)
    with agent_for(dst) as agent, pytest.raises(InvalidInput, match="same file"):
        copy_disk(disk, agent, disk, block_size=65536)
    assert disk_digest(disk) == before
    assert guest.where() == {"lab1": "running"}
