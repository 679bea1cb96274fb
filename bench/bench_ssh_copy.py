"""The cold migration's disk copy over ssh, against rsync over the same ssh and scp of the whole image.

On a local lab of its own (``--lab``, default ``labmigssh``, cleaned at the end unless
``--keep``): a source image on lab1 and an older copy of it on lab2 that differs in 1 %
of its 64 KiB blocks. Each tool runs as a process, crosses the lab's link through the
lab's sshd (ssh started inside lab1, as a cold migration does) and is timed from its
start to its exit:

    labmig            ``python -m bench.bench_ssh_copy --one SRC DST``: what ``labmig migrate
                      cold`` does for one disk (the helper on lab2 over ssh, then
                      ``labmig.remote.destination.copy_disk``), verified as the migration's
                      default (``full``) and with ``fast``
    rsync             ``rsync --inplace --no-whole-file -e ssh`` (its own whole-file checksum)
    scp               the whole image

Bytes: labmig counts what its ssh pipes carry (frames and all) against the bound
changed + 16 B per block; rsync's ``--stats``; and for every tool the bytes on lab1's
end of the link (ssh, TCP/IP and encryption included). The link is measured as the lab
leaves it (no shaping) and shaped to ``--rates``. The lab's image directories are in
memory (tmpfs), so the page cache plays no part here.

    python -m bench.bench_ssh_copy [--size 1GiB] [--rates 1Gbit/s] [--repeat 3]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time

BS = 64 << 10
LAB = "labmigssh"


def one_copy(src: str, dst: str, verify: str) -> int:
    """The child process: one disk copied as a cold migration copies it; prints its stats."""
    from labmig.cold.sides import lab_layout
    from labmig.remote.destination import copy_disk
    from labmig.remote.ssh import SshAgent, SshTarget

    layout = lab_layout("lab2", os.environ.get("LABMIG_LAB"))
    assert layout is not None, "lab2 is not a host of the lab"
    ssh = layout["ssh"]
    target = SshTarget(address=ssh["address"], config=ssh["config"], python=ssh["python"], via=tuple(ssh["via"]))
    agent = SshAgent(target, list(layout["image_dirs"])).start()
    try:
        stats = copy_disk(src, agent, dst, block_size=BS, verify=verify)
    finally:
        agent.close()
    print(json.dumps(stats))
    return 0


def link_bytes(lab) -> int:
    from labmig.lab.netns import LINK_DEV

    out = subprocess.run(["ip", "-n", lab.layout.host("lab1").netns, "-s", "-j", "link", "show", LINK_DEV],
                         capture_output=True, text=True, check=True).stdout
    stats = json.loads(out)[0]["stats64"]
    return int(stats["rx"]["bytes"]) + int(stats["tx"]["bytes"])


class Images:
    """The source on lab1 and the destination on lab2, by their paths inside and outside the hosts."""

    def __init__(self, lab, size: int, seed: int = 1) -> None:
        import random

        from labmig.lab.layout import LOCAL_IMAGE_DIR

        self.inside = f"{LOCAL_IMAGE_DIR}/bench-ssh.img"
        self.src = lab.host("lab1").outside(self.inside)
        self.dst = lab.host("lab2").outside(self.inside)
        rng = random.Random(seed)
        with open(self.src, "wb") as f:
            for _ in range(size // (16 << 20)):
                f.write(os.urandom(16 << 20))
        nblocks = size // BS
        self.changed = sorted(rng.sample(range(nblocks), nblocks // 100))
        self.old = {b: os.urandom(BS) for b in self.changed}

    def reset(self) -> None:
        """lab2 holds the older copy: the source with 1 % of its blocks different."""
        shutil.copyfile(self.src, self.dst)
        fd = os.open(self.dst, os.O_RDWR)
        try:
            for b, data in self.old.items():
                os.pwrite(fd, data, b * BS)
        finally:
            os.close(fd)
        self.dst.with_name(f".{self.dst.name}.incomplete").unlink(missing_ok=True)

    def identical(self) -> bool:
        return subprocess.run(["cmp", "-s", str(self.src), str(self.dst)]).returncode == 0


def tools(lab, images: Images) -> dict[str, list[str]]:
    from labmig.lab.netns import host_cmd
    from labmig.lab.sshd import config_path

    inside_lab1 = host_cmd(lab.layout.host("lab1"))
    ssh = f"ssh -F {config_path(lab.layout)} -o Compression=no"
    one = [sys.executable, "-m", "bench.bench_ssh_copy", "--lab", lab.name, "--one"]
    return {
        "labmig, verify full (migrate cold's default)": one + ["full", str(images.src), images.inside],
        "labmig, verify fast": one + ["fast", str(images.src), images.inside],
        "rsync --inplace --no-whole-file": inside_lab1 + [
            "rsync", "--inplace", "--no-whole-file", "--ignore-times", "--stats", "-e", ssh,
            images.inside, f"lab2:{images.inside}"],
        "scp (whole image)": inside_lab1 + ["scp", "-q", "-F", str(config_path(lab.layout)),
                                           images.inside, f"lab2:{images.inside}"],
    }


def measure(lab, images: Images, repeat: int) -> dict[str, dict]:
    runs: dict[str, dict[str, list]] = {}
    for _ in range(repeat):
        for name, argv in tools(lab, images).items():
            images.reset()
            before = link_bytes(lab)
            started = time.perf_counter()
            out = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "LABMIG_LAB": lab.name})
            seconds = time.perf_counter() - started
            on_link = link_bytes(lab) - before
            if out.returncode != 0:
                raise RuntimeError(f"{name} failed: {out.stderr.strip()[-800:]}")
            assert images.identical(), f"{name} did not make lab2's image identical"
            r = runs.setdefault(name, {"seconds": [], "link": [], "tool": []})
            r["seconds"].append(seconds)
            r["link"].append(on_link)
            if name.startswith("labmig"):
                stats = json.loads(out.stdout.strip().splitlines()[-1])
                r["tool"].append(stats["wire_sent"] + stats["wire_received"])
            elif name.startswith("rsync"):
                sent = int(re.search(r"Total bytes sent: ([\d,]+)", out.stdout).group(1).replace(",", ""))
                got = int(re.search(r"Total bytes received: ([\d,]+)", out.stdout).group(1).replace(",", ""))
                r["tool"].append(sent + got)
    return {name: {"best": min(r["seconds"]), "median": statistics.median(r["seconds"]),
                   "link_bytes": int(statistics.median(r["link"])),
                   "tool_bytes": int(statistics.median(r["tool"])) if r["tool"] else None}
            for name, r in runs.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="1GiB", help="image size (default 1GiB)")
    ap.add_argument("--rates", default="1Gbit/s", help="link rates to shape to, comma-separated, "
                                                        "besides the unshaped link (default 1Gbit/s)")
    ap.add_argument("--repeat", type=int, default=3, help="rounds (default 3); best and median kept")
    ap.add_argument("--lab", default=LAB, help=f"the lab to bring up and use (default {LAB})")
    ap.add_argument("--keep", action="store_true", help="leave the lab up afterwards")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--one", nargs=3, metavar=("VERIFY", "SRC", "DST"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        os.environ["LABMIG_LAB"] = args.lab
        return one_copy(args.one[1], args.one[2], args.one[0])

    from labmig.units import format_rate, format_size, parse_rate, parse_size

    size = parse_size(args.size) // (16 << 20) * (16 << 20)
    # the hosts' image directories are tmpfs: room for the image and a rewritten copy
    # (read when labmig.lab is first imported)
    os.environ.setdefault("LABMIG_LOCAL_DIR_SIZE", f"{(3 * size) >> 20}m")
    os.environ["LABMIG_LAB"] = args.lab
    from labmig.lab import LocalLab
    lab = LocalLab(args.lab)
    lab.up(build=False)
    results: dict[str, object] = {"size": size}
    try:
        images = Images(lab, size)
        changed = len(images.changed) * BS
        bound = changed + 16 * (size // BS)
        print(f"disk copy over the lab's ssh: a {format_size(size)} image, {len(images.changed)} of "
              f"{size // BS} 64 KiB blocks changed ({format_size(changed)}); bound changed + 16 B per block "
              f"= {bound:,} B; {args.repeat} rounds")
        for rate in [None] + [parse_rate(r) for r in args.rates.split(",") if r.strip()]:
            lab.shape_link(rate)
            label = "unshaped" if rate is None else f"shaped to {format_rate(rate)}"
            result = measure(lab, images, args.repeat)
            results[label] = result
            rsync = result["rsync --inplace --no-whole-file"]["best"]
            print(f"link {label}")
            print(f"  {'tool':<46} {'best':>7} {'median':>7} {'x rsync':>7} {'tool bytes':>14} {'link bytes':>14}")
            for name, r in result.items():
                tool_bytes = f"{r['tool_bytes']:,}" if r["tool_bytes"] is not None else "-"
                print(f"  {name:<46} {r['best']:>7.3f} {r['median']:>7.3f} {r['best'] / rsync:>7.2f} "
                      f"{tool_bytes:>14} {r['link_bytes']:>14,}")
            ours = result["labmig, verify full (migrate cold's default)"]["tool_bytes"]
            print(f"  labmig's bytes over the bound: {ours - bound:+,} B")
    finally:
        lab.shape_link(None)
        if not args.keep:
            lab.clean()
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
