"""The destination helper's path policy: only files under its image directories."""
import os

import pytest

from labmig.remote.paths import ImagePolicy, PathRefused


@pytest.fixture
def policy(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "other").mkdir()
    return ImagePolicy([tmp_path / "images"])


def test_plain_names_resolve_inside(policy, tmp_path):
    root = os.path.realpath(tmp_path / "images")
    assert str(policy.resolve("g1.img")) == os.path.join(root, "g1.img")
    assert str(policy.resolve(os.path.join(root, "g1.img"))) == os.path.join(root, "g1.img")


@pytest.mark.parametrize("name", ["", "../x", "a/../../x", "./x", "-rf", "sub/--help", "a\x00b", "/"])
def test_odd_names_are_refused(policy, name):
    with pytest.raises(PathRefused) as info:
        policy.resolve(name)
    assert info.value.hint


def test_absolute_outside_is_refused(policy, tmp_path):
    for name in ("/etc/passwd", str(tmp_path / "other" / "x.img"), str(tmp_path / "images-evil" / "x")):
        with pytest.raises(PathRefused, match="outside"):
            policy.resolve(name)


def test_escaping_symlinks_are_refused(policy, tmp_path):
    images = tmp_path / "images"
    (images / "link.img").symlink_to(tmp_path / "other" / "target.img")
    (images / "dirlink").symlink_to(tmp_path / "other")
    (images / "ok.img").write_bytes(b"x")
    (images / "inner.img").symlink_to(images / "ok.img")
    with pytest.raises(PathRefused, match="symlink"):
        policy.resolve("link.img")
    with pytest.raises(PathRefused, match="symlink is not followed"):
        policy.resolve("dirlink/x.img")
    # A symlink is refused even when it points inside: only the file itself is written.
    with pytest.raises(PathRefused, match="symlink"):
        policy.resolve("inner.img")


def test_directories_are_refused(policy, tmp_path):
    (tmp_path / "images" / "sub").mkdir()
    with pytest.raises(PathRefused, match="directory"):
        policy.resolve("sub")


def test_missing_image_dir_is_a_clear_error(tmp_path):
    with pytest.raises(Exception) as info:
        ImagePolicy([tmp_path / "nope"])
    assert "does not exist" in str(info.value)


def test_sub_directories_are_walked_without_following_symlinks(policy, tmp_path):
    images = tmp_path / "images"
    (images / "sub").mkdir()
    root = os.path.realpath(images)
    assert str(policy.resolve("sub/g.img")) == os.path.join(root, "sub", "g.img")
    assert str(policy.resolve(os.path.join(str(images), "sub", "g.img"))) == os.path.join(root, "sub", "g.img")
    with pytest.raises(PathRefused, match="does not exist"):
        policy.resolve("nosub/g.img")
    (images / "file").write_bytes(b"")
    with pytest.raises(PathRefused, match="not a directory"):
        policy.resolve("file/g.img")


def test_located_names_are_one_component_in_a_directory_fd(policy, tmp_path):
    at = policy.locate("g1.img")
    try:
        assert at.name == "g1.img" and not at.owned
        assert os.path.samestat(os.fstat(at.dir_fd), os.stat(tmp_path / "images"))
    finally:
        at.close()
