"""The Vagrant pair, as far as it can be checked without booting it: Ruby, shellcheck, declarations."""
import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VAGRANT = ROOT / "vagrant"

# Evaluates the Vagrantfile against a recorder standing in for Vagrant's configuration
# objects, and prints every setting it made as JSON.
RECORDER = r"""
require "json"
class Rec
  def initialize(path, log)
    @path = path
    @log = log
  end
  def method_missing(name, *args, **kw, &blk)
    @log << [(@path + [name]).map(&:to_s), args.map(&:to_s), kw.map { |k, v| [k.to_s, v.to_s] }.to_h]
    child = Rec.new(@path + [name], @log)
    blk.call(child) if blk
    child
  end
  def respond_to_missing?(*) = true
end
module Vagrant
  LOG = []
  def self.configure(_version)
    yield Rec.new([], LOG)
  end
end
load ARGV[0]
puts JSON.dump(Vagrant::LOG)
"""


def _tool(name):
    path = shutil.which(name)
    if not path:
        pytest.fail(f"{name} is missing: `make setup` installs it (scripts/install-system-packages.sh)")
    return path


def test_vagrantfile_is_valid_ruby():
    out = subprocess.run([_tool("ruby"), "-c", str(VAGRANT / "Vagrantfile")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "Syntax OK" in out.stdout


def test_vagrantfile_declares_two_nested_kvm_hosts_with_nfs_and_shared_provisioning(tmp_path):
    script = tmp_path / "rec.rb"
    script.write_text(RECORDER)
    out = subprocess.run([_tool("ruby"), str(script), str(VAGRANT / "Vagrantfile")], capture_output=True, text=True,
                         cwd=VAGRANT)
    assert out.returncode == 0, out.stderr
    log = json.loads(out.stdout)
    calls = [(".".join(path), args, kw) for path, args, kw in log]
    defined = [args[0] for path, args, _ in calls if path == "vm.define"]
    assert defined == ["lab1", "lab2"]
    assert ("vm.define.vm.provider.nested=", ["true"], {}) in calls
    assert ("vm.define.vm.provider.cpu_mode=", ["host-passthrough"], {}) in calls
    nets = [kw for path, args, kw in calls if path == "vm.define.vm.network" and args == ["private_network"]]
    assert [n["ip"] for n in nets] == ["192.168.77.11", "192.168.77.12"]
    provisions = [kw for path, args, kw in calls if path == "vm.define.vm.provision"]
    assert all(p["path"] == "provision.sh" for p in provisions) and len(provisions) == 2
    assert "lab1" in provisions[0]["args"] and "192.168.77.11" in provisions[1]["args"]  # NFS from lab1
    assert (VAGRANT / "provision.sh").exists()


def test_shell_scripts_pass_shellcheck():
    scripts = [VAGRANT / "provision.sh", ROOT / "labmig" / "lab" / "host-packages.sh"]
    out = subprocess.run([_tool("shellcheck"), *map(str, scripts)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout


def test_provisioning_reuses_the_local_lab_host_setup():
    text = (VAGRANT / "provision.sh").read_text()
    assert "labmig/lab/host-packages.sh" in text
    assert "labmig lab host-setup" in text
    assert "nfs" in text


@pytest.mark.lab
def test_host_setup_writes_the_local_lab_settings_and_the_guest(tmp_path):
    import os
    import xml.etree.ElementTree as ET

    from labmig.lab import GuestSpec, libvirtd, make_layout
    from labmig.lab.hostsetup import guest_xml, setup_host

    if os.geteuid() != 0:
        pytest.fail("needs root (writes the lab's boot directory)")
    from labstate import side_lab

    name = side_lab("hs")     # derived from the test lab's name: two sessions never share it
    layout = make_layout(name)
    try:
        done = setup_host("lab2", "192.0.2.12", lab=name, etc=tmp_path)
        assert done
        conf = (tmp_path / "libvirtd.conf").read_text()
        assert 'listen_addr = "192.0.2.12"' in conf and 'auth_tcp = "none"' in conf
        local_host = make_layout(name).host("lab2")
        assert f'host_uuid = "{local_host.host_uuid}"' in conf  # same identity as the local lab's lab2
        assert (tmp_path / "qemu.conf").read_text() == libvirtd.render_qemu_conf("192.0.2.12", f"lab2 (lab {name})")
        assert (layout.boot_dir / "vmlinuz").stat().st_size > 1_000_000
        root = ET.fromstring(guest_xml(GuestSpec(name="vg", index=3), lab=name))
        assert root.get("type") == "kvm"
        assert root.find("devices/disk/source").get("file") == str(layout.shared_dir / "vg.img")
        assert (layout.shared_dir / "vg.img").exists()
    finally:
        shutil.rmtree(layout.state_dir, ignore_errors=True)


HOST_PACKAGES = ROOT / "labmig" / "lab" / "host-packages.sh"


def _backports_for(apt_dir):
    import os
    env = {**os.environ, "LABMIG_APT_DIR": str(apt_dir)}
    return subprocess.run(["bash", str(HOST_PACKAGES), "--print-backports"], capture_output=True, text=True, env=env)


def test_backports_source_is_derived_from_a_deb822_source(tmp_path):
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\nComponents: main\n")
    out = _backports_for(tmp_path)
    assert out.returncode == 0, out.stderr
    assert "URIs: http://mirror.example/debian\n" in out.stdout
    assert "Suites: bookworm-backports" in out.stdout
    assert "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg" in out.stdout


def test_backports_source_is_derived_from_a_one_line_source(tmp_path):
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list").write_text(
        "deb http://security.example/debian-security bookworm-security main\n"
        "deb [signed-by=/etc/apt/keyrings/d.gpg] http://mirror.example/debian bookworm main contrib\n")
    out = _backports_for(tmp_path)
    assert out.returncode == 0, out.stderr
    assert "URIs: http://mirror.example/debian\n" in out.stdout
    assert "Signed-By: /etc/apt/keyrings/d.gpg" in out.stdout


def test_no_debian_source_is_a_clear_error(tmp_path):
    (tmp_path / "sources.list.d").mkdir()
    out = _backports_for(tmp_path)
    assert out.returncode == 1
    assert "no Debian apt source" in out.stderr and "hint" in out.stderr
