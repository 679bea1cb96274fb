"""Fixtures of the cold-migration tests: a disk helper as a real process on pipes."""
import pytest

from labmig.remote.ssh import SshAgent, SshTarget


@pytest.fixture
def helper_dirs(tmp_path):
    """(helper, its image directory, a sibling directory it must never touch)."""
    images = tmp_path / "images"
    images.mkdir()
    (tmp_path / "outside").mkdir()
    with SshAgent(SshTarget(address=None), [str(images)]) as helper:
        yield helper, images, tmp_path / "outside"
