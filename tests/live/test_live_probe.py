"""PingProbe against a real UDP echo server on loopback that goes silent for a known time."""
import socket
import threading
import time

from labmig.live.probe import PingProbe


def echo_server(silent_from: float, silent_for: float):
    srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    srv.bind(("127.0.0.1", 0))
    srv.settimeout(0.1)
    stop = threading.Event()
    t0 = time.monotonic()

    def serve():
        while not stop.is_set():
            try:
                data, peer = srv.recvfrom(256)
            except socket.timeout:
                continue
            now = time.monotonic() - t0
            if silent_from <= now < silent_from + silent_for:
                continue  # the "switchover": requests are lost
            srv.sendto(data.replace(b"PING", b"PONG"), peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return srv.getsockname(), stop, thread, srv


def test_probe_measures_a_known_silence():
    addr, stop, thread, srv = echo_server(0.3, 0.4)
    probe = PingProbe(lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM), addr, interval=0.01)
    probe.start()
    time.sleep(1.0)
    gap = probe.stop()
    stop.set(); thread.join(); srv.close()
    assert probe.sent > 50
    assert 0.38 <= gap <= 0.55, gap
    assert len(probe.gaps(0.2)) == 1


def test_probe_without_answers_reports_none():
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    probe = PingProbe(lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM), sink.getsockname(), interval=0.01)
    probe.start()
    time.sleep(0.1)
    assert probe.stop() is None
    sink.close()
