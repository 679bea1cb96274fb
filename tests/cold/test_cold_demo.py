"""make demo's fallback: when the lab cannot come up it says why and shows the simulator's table."""
from labmig import demo
from labmig.errors import LabError


def test_demo_falls_back_to_the_simulator_saying_why(monkeypatch, capsys):
    def no_lab(timeout):
        raise LabError("libvirtd would not start", "see its log")

    monkeypatch.setattr(demo, "on_lab", no_lab)
    assert demo.main([]) == 0
    out = capsys.readouterr()
    assert "the local lab could not be used: libvirtd would not start" in out.err
    assert "Modelled by the simulator" in out.out and "client-seen interruption" in out.out
    assert "libvirtd would not start" in out.out  # the table's note repeats why
