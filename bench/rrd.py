"""RRD history: what one five-minute round costs per VM, and what a VM's file costs on disk.

(a) 1,000 VM files, one update each, through Baadal (``update_vm_rrd``: identity check,
    directory lock, last-update check, rrdtool update) against bare ``rrdtool.update``
    calls on the same files in the same run. The ratio is Baadal's own overhead.
(b) The size of one VM file with Baadal's archives against one laid out like upstream's
    (step 300, MIN 1x200000, AVERAGE 12x100, 288x50, 8928x24, 107136x10, same six sources).

Run from the repository root: ``.venv/bin/python bench/rrd.py``.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import use_own_tree

use_own_tree()

import rrdtool

from baadal import constants as C
from baadal.config import load_settings
from baadal.drivers.base import DomainStats
from baadal.monitor import rrd

VMS, ROUNDS = 1000, 3
UPSTREAM_ARCHIVES = (
    "RRA:MIN:0.5:1:200000",
    "RRA:AVERAGE:0.5:12:100",
    "RRA:AVERAGE:0.5:288:50",
    "RRA:AVERAGE:0.5:8928:24",
    "RRA:AVERAGE:0.5:107136:10",
)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(home=Path(tmp) / "home")
        bare_dir = Path(tmp) / "bare"
        bare_dir.mkdir()
        start = int(time.time()) - 10 * C.RRD_STEP_S
        names = [f"org_user{i:04d}_vm" for i in range(VMS)]
        for name in names:  # both sets of files exist before timing
            rrd.update_vm_rrd(settings, name, None, start)
            rrd.create_rrd(bare_dir / f"{name}.rrd", start)
        baadal_s, bare_s = [], []
        for r in range(1, ROUNDS + 1):
            ts = start + r * C.RRD_STEP_S
            sample = DomainStats(r * 10**11, 2, 2**30, r * 10**6, r * 10**6, r * 10**5, r * 10**5)
            row = rrd.vm_sample(sample, ts)
            values = f"{ts}:{row.cpu}:{row.ram}:{row.dr}:{row.dw}:{row.tx}:{row.rx}"
            t0 = time.perf_counter()
            for name in names:
                rrdtool.update(str(bare_dir / f"{name}.rrd"), values)
            bare_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            for name in names:
                rrd.update_vm_rrd(settings, name, sample, ts)
            baadal_s.append(time.perf_counter() - t0)
        baadal, bare = statistics.median(baadal_s), statistics.median(bare_s)
        print(f"(a) {VMS} VM updates: Baadal {baadal * 1e3:.0f} ms ({baadal / VMS * 1e6:.0f} us/VM),"
              f" bare rrdtool.update {bare * 1e3:.0f} ms; ratio {baadal / bare:.2f}")  # fmt: skip

        ours = rrd.get_rrd_file(settings, names[0]).stat().st_size
        upstream = Path(tmp) / "upstream.rrd"
        sources = [f"DS:{n}:GAUGE:{C.RRD_HEARTBEAT_S}:0:U" for n, _ in rrd.SOURCES]
        rrdtool.create(str(upstream), "--step", str(C.RRD_STEP_S), *sources, *UPSTREAM_ARCHIVES)
        theirs = upstream.stat().st_size
        print(f"(b) one VM's file: Baadal {ours / 1024:.0f} KiB, upstream layout "
              f"{theirs / 1024:.0f} KiB; ratio {ours / theirs:.3f} "
              f"(1,000 VMs: {ours * 1000 / 2**20:.0f} MiB vs {theirs * 1000 / 2**20:.0f} MiB)")  # fmt: skip


if __name__ == "__main__":
    main()
