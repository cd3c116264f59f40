"""Monitoring on the lab: the periodic 'Update RRD' job records every lab host (over its
own sshd and libvirtd) and a running VM in RRD files, graphs are drawn from them, a
deleted VM's history goes with it; the host network graph measures both directions
between the lab hosts with ping and iperf3 and draws them."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path

import pytest
import rrdtool
from sqlalchemy import select
from typer.testing import CliRunner

from baadal import constants as C
from baadal.cli.main import app
from baadal.config import get_settings
from baadal.db.models import VM, Task
from baadal.db.session import session_scope
from baadal.drivers import hypervisor_for
from baadal.host import network_graph
from baadal.lab import layout
from baadal.monitor import rrd
from baadal.services import vms
from baadal.services.policy import SYSTEM
from baadal.tasks.registry import load_handler_modules
from baadal.tasks.worker import Worker
from tests.e2e.conftest import Lab, create_vm, wait_ping
from tests.unit.test_vm_lifecycle import run_tasks

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

RRD_INTERVAL_S = 2


def _rrd_tasks(lab: Lab) -> list[Task]:
    with session_scope(lab.engine) as s:
        tasks = list(
            s.scalars(select(Task).where(Task.task_type == C.TaskType.UPDATE_RRD).order_by(Task.id))
        )
        s.expunge_all()
    return tasks


def _seen(lab: Lab) -> list[tuple[int, str]]:
    return [(t.status, t.message) for t in _rrd_tasks(lab)]


def _last_ds(path: Path) -> dict[str, float]:
    info = rrdtool.info(str(path))
    return {name: float(info[f"ds[{name}].last_ds"]) for name, _ in rrd.SOURCES}


@pytest.fixture
def cli(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("BAADAL_HOME", str(lab.home))
    get_settings.cache_clear()
    return CliRunner()


def test_periodic_job_records_hosts_and_vms_and_graphs_are_drawn(
    lab: Lab, cli: CliRunner, tmp_path: Path
) -> None:
    h1 = layout.HOSTS[0]
    vm_id = create_vm(lab, "mon", layout.VLANS[0].domain, h1.name)
    with session_scope(lab.engine) as s:
        vm = s.get(VM, vm_id)
        ip, identity, host = vm.private_ip.private_ip, vm.vm_identity, vm.host
        s.expunge(host)
    assert wait_ping(ip, 60)
    # bounded traffic to the VM (an address in a namespace the lab made)
    subprocess.run(["ping", "-c", "20", "-i", "0.05", "-s", "1000", "-q", ip], check=True,
                   capture_output=True)  # fmt: skip

    lab.settings.scheduler.rrd = RRD_INTERVAL_S
    worker = Worker(lab.engine, lab.settings, registry=load_handler_modules(), concurrency=2)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 40
        while len([t for t in _rrd_tasks(lab) if t.status in C.TASK_FINAL]) < 2:
            assert time.monotonic() < deadline, f"the RRD job did not run twice: {_seen(lab)}"
            time.sleep(0.3)
    finally:
        worker.stop()
        thread.join(60)
    done = [t for t in _rrd_tasks(lab) if t.status in C.TASK_FINAL]
    assert [t.status for t in done[:2]] == [C.TaskStatus.SUCCESS] * 2, done[0].message
    assert done[0].message == (
        f"{len(layout.HOSTS)} host(s), 1 VM(s), the controller and the NAT box recorded"
    )

    machines = [rrd.host_identity(h.mgmt_ip) for h in layout.HOSTS]
    for machine in [*machines, rrd.CONTROLLER_IDENTITY, rrd.NAT_IDENTITY]:
        recorded = _last_ds(rrd.get_rrd_file(lab.settings, machine))
        assert recorded["ram"] > 0 and recorded["cpu"] > 0 and recorded["rx"] > 0, machine
    vm_file = rrd.get_rrd_file(lab.settings, identity)
    recorded = _last_ds(vm_file)
    live = hypervisor_for(host.libvirt_uri).running_stats()[identity]  # the source the job read
    assert 0 < recorded["cpu"] <= live.cpu_time_ns // 10_000_000
    assert recorded["rx"] >= 20 * 1000 and recorded["tx"] >= 20 * 1000  # the pings and replies
    assert recorded["ram"] > 0

    png = tmp_path / "nw.png"
    drawn = cli.invoke(app, ["monitor", "graph", "vm", "mon", "--type", "nw", "--period",
                             "hour", "--out", str(png)])  # fmt: skip
    assert drawn.exit_code == 0, drawn.output
    assert png.read_bytes()[:4] == b"\x89PNG"
    shown = cli.invoke(app, ["monitor", "show", "host", h1.name, "--period", "hour"])
    assert shown.exit_code == 0 and "network received" in shown.output, shown.output
    nat = cli.invoke(app, ["monitor", "graph", "nat", "--type", "cpu", "--period", "day"])
    assert nat.exit_code == 0 and nat.output.strip().endswith("nat_cpu_day.png"), nat.output
    metrics = cli.invoke(app, ["monitor", "metrics"])
    assert metrics.exit_code == 0, metrics.output
    assert f'baadal_host_up{{host="{h1.name}"}} 1.0' in metrics.output
    assert f'baadal_memory_used_bytes{{host="{h1.name}",kind="vm",name="mon"}}' in metrics.output
    assert 'baadal_network_received_bytes_total{host="",kind="nat",name="nat"}' in metrics.output
    wrong = cli.invoke(app, ["monitor", "graph", "vm", "mon", "--type", "gpu"])
    assert wrong.exit_code == 2 and "unknown graph type 'gpu'" in wrong.output

    with session_scope(lab.engine) as s:
        vms.operate(s, SYSTEM, vm_id, "delete")
    run_tasks(lab.engine, lab.settings)
    assert not vm_file.exists()


def test_host_network_graph_between_the_lab_hosts(lab: Lab, cli: CliRunner, tmp_path: Path) -> None:
    svg = tmp_path / "network.svg"
    started = time.monotonic()
    measured = cli.invoke(app, ["monitor", "network", "--out", str(svg)])
    took = time.monotonic() - started
    assert measured.exit_code == 0, measured.output
    print(f"\nnetwork graph of {len(layout.HOSTS)} lab hosts measured in {took:.1f} s")
    json_path, _ = network_graph.graph_files(lab.settings)
    data = json.loads(json_path.read_text())
    names = [n["name"] for n in data["nodes"]]
    assert names == [h.name for h in layout.HOSTS]
    assert [n["label"] for n in data["nodes"]] == ["10Gbit/s"] * len(layout.HOSTS)  # veth
    pairs = {(names[e["source"]], names[e["target"]]) for e in data["edges"]}
    assert pairs == {(a.name, b.name) for a in layout.HOSTS for b in layout.HOSTS if a != b}
    for edge in data["edges"]:
        assert 0 < edge["latency_ms"] < 50
        assert edge["throughput_mbps"] > 10
        print(f"  {names[edge['source']]} -> {names[edge['target']]}: {edge['label']}")
    assert svg.read_text().count("<circle") == len(layout.HOSTS)
