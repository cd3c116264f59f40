"""RRD history and graphs with the real rrdtool on files in the test's home; VMs on
libvirt's test driver. The real-libvirtd + sshd counterpart is
tests/integration/test_monitor_real.py."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import rrdtool
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, event, select, update
from typer.testing import CliRunner

from baadal import constants as C
from baadal.cli.main import app
from baadal.config import Settings, get_settings, load_settings
from baadal.db.models import VM, Host
from baadal.db.session import session_scope
from baadal.drivers.base import DomainStats
from baadal.errors import NotFoundError, ValidationError
from baadal.monitor import graphs, prometheus, rrd
from baadal.services import monitoring
from baadal.services.policy import SYSTEM
from baadal.tasks.params import PeriodicParams
from baadal.tasks.registry import TaskContext
from tests.support.cloud import Cloud, fake_host_uri, make_cloud
from tests.unit.test_vm_lifecycle import create, hv_of, operate

pytestmark = pytest.mark.unit

STEP = C.RRD_STEP_S
GIB = 1024**3


@pytest.fixture
def cloud(sqlite_engine: Engine, settings: Settings, tmp_path: Path) -> Cloud:
    settings.general.snapshot_requires_ping = False
    settings.vm.stop_timeout_s = 0.5
    return make_cloud(sqlite_engine, settings, tmp_path, [fake_host_uri(tmp_path, "h1")])


def stats(cpu_s: float, vcpus: int = 2, ram: int = GIB, io: int = 0) -> DomainStats:
    return DomainStats(int(cpu_s * 1e9), vcpus, ram, io, 2 * io, 3 * io, 4 * io)


def last_step() -> int:
    return int(time.time()) // STEP * STEP


def feed(settings: Settings, identity: str, rows: list[tuple[int, DomainStats | None]]) -> None:
    for timestamp, sample in rows:
        assert rrd.update_vm_rrd(settings, identity, sample, timestamp)


def test_counters_become_rates_and_averages(settings: Settings) -> None:
    end = last_step()
    # 2 vCPUs busy for 150 s of every 300 s = 25 %; 1000 B/s read, 2000 written, ...
    feed(
        settings,
        "org_alice_web",
        [(end - STEP * (3 - i), stats(150 * i, io=300_000 * i)) for i in range(4)],
    )
    path = rrd.get_rrd_file(settings, "org_alice_web")
    assert path == settings.home / "vm_rrds" / "org_alice_web.rrd"
    info = rrdtool.info(str(path))
    assert info["step"] == STEP
    assert {info[f"ds[{n}].type"] for n in ("cpu", "dr", "dw", "tx", "rx")} == {"DERIVE"}
    assert info["ds[ram].type"] == "GAUGE"
    assert info["ds[cpu].minimal_heartbeat"] == C.RRD_HEARTBEAT_S

    data = rrd.fetch_rrd_data(settings, "org_alice_web", "hour")
    assert data.cpu == pytest.approx(25.0, abs=0.01)
    assert data.ram == GIB
    assert (data.dr, data.dw, data.rx, data.tx) == (1000, 2000, 3000, 4000)


def test_a_vm_that_stops_and_restarts_never_shows_a_negative_rate(settings: Settings) -> None:
    end = last_step()
    rows = [
        (end - 4 * STEP, stats(1000, io=10**9)),
        (end - 3 * STEP, stats(1300, io=10**9 + 300)),  # 50 %, 1 B/s read
        (end - 2 * STEP, None),  # shut off: recorded as zero
        (end - STEP, stats(60)),  # booted again: counters start over
        (end, stats(210)),  # 25 %
    ]
    feed(settings, "vm1", rows)
    path = str(rrd.get_rrd_file(settings, "vm1"))
    _, names, values = rrdtool.fetch(
        path, "AVERAGE", "--start", str(end - 4 * STEP), "--end", str(end)
    )
    cpu = [row[names.index("cpu")] for row in values]
    ram = [row[names.index("ram")] for row in values]
    assert cpu[0] == pytest.approx(50.0)
    assert cpu[1] is None  # counter dropped to 0: unknown, not -50 %
    assert cpu[2] == pytest.approx(10.0)  # 0 -> 60 s of 2 CPUs over 300 s
    assert cpu[3] == pytest.approx(25.0)
    assert ram[1] == 0 and ram[3] == GIB
    assert all(v is None or v >= 0 for row in values for v in row)


def test_a_second_update_in_the_same_second_is_skipped(settings: Settings) -> None:
    now = int(time.time())
    assert rrd.update_vm_rrd(settings, "vm1", stats(10), now)
    assert not rrd.update_vm_rrd(settings, "vm1", stats(20), now)
    assert not rrd.update_vm_rrd(settings, "vm1", stats(20), now - 5)
    assert rrdtool.last(str(rrd.get_rrd_file(settings, "vm1"))) == now


def test_bad_names_and_missing_history_are_clear_errors(settings: Settings) -> None:
    for bad in ("../etc/passwd", "a/b", "", ".hidden", "x" * 300):
        with pytest.raises(ValidationError, match="an RRD identity"):
            rrd.get_rrd_file(settings, bad)
    with pytest.raises(NotFoundError, match="no monitoring data for 'nobody' yet"):
        rrd.fetch_rrd_data(settings, "nobody")
    with pytest.raises(NotFoundError, match="no monitoring data"):
        graphs.create_graph(settings, "nobody", "cpu", "day")
    rrd.update_vm_rrd(settings, "vm1", stats(1), int(time.time()))
    with pytest.raises(ValidationError, match="unknown period 'decade'; choose one of hour"):
        rrd.fetch_rrd_data(settings, "vm1", "decade")
    with pytest.raises(ValidationError, match="unknown graph type 'gpu'; choose one of cpu"):
        graphs.create_graph(settings, "vm1", "gpu", "day")
    assert not graphs.graph_dir(settings).exists() or not any(graphs.graph_dir(settings).iterdir())


def test_graphs_are_png_files_for_every_type_and_period(settings: Settings) -> None:
    end = last_step()
    feed(settings, "vm1", [(end - STEP * (3 - i), stats(100 * i, io=1000 * i)) for i in range(4)])
    made = set()
    for kind in graphs.GRAPH_TYPES:
        for period in C.GRAPH_PERIODS:
            png = graphs.create_graph(settings, "vm1", kind, period, title="VM web")
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            made.add(png.name)
    assert len(made) == len(graphs.GRAPH_TYPES) * len(C.GRAPH_PERIODS)
    # no private half-drawn files are left next to them
    assert sorted(p.name for p in graphs.graph_dir(settings).iterdir()) == sorted(made)


def test_running_stats_of_a_host_and_history_of_its_vms(
    sqlite_engine: Engine, settings: Settings, cloud: Cloud
) -> None:
    web = create(sqlite_engine, settings, "web")
    db = create(sqlite_engine, settings, "db")
    operate(sqlite_engine, settings, db, "destroy")
    hv, web_identity = hv_of(sqlite_engine, web)
    _, db_identity = hv_of(sqlite_engine, db)
    running = hv.running_stats()
    assert set(running) >= {web_identity} and db_identity not in running
    one = hv.stats(web_identity)  # the test driver's counters move with the clock
    assert (running[web_identity].vcpus, running[web_identity].memory_bytes) == (
        one.vcpus,
        one.memory_bytes,
    )
    assert 0 < running[web_identity].cpu_time_ns <= one.cpu_time_ns

    now = int(time.time())
    with session_scope(sqlite_engine) as s:
        for vm_id in (web, db):
            identity = s.get(VM, vm_id).vm_identity
            rrd.update_vm_rrd(settings, identity, running.get(identity), now)
    for identity in (web_identity, db_identity):
        assert rrd.get_rrd_file(settings, identity).is_file()

    # the service layer finds the history by VM name
    with session_scope(sqlite_engine) as s:
        png = monitoring.get_performance_graph(s, SYSTEM, settings, "vm", "web", "ram", "hour")
        assert png.name == f"{web_identity}_ram_hour.png"
        with pytest.raises(ValidationError, match="unknown kind 'disk'"):
            monitoring.fetch_rrd_data(s, SYSTEM, settings, "disk", "web", "day")
        with pytest.raises(NotFoundError):
            monitoring.fetch_rrd_data(s, SYSTEM, settings, "vm", "nope", "day")
        with pytest.raises(ValidationError, match="name the host"):
            monitoring.fetch_rrd_data(s, SYSTEM, settings, "host", "", "day")
        with pytest.raises(NotFoundError, match="no monitoring data for 'controller' yet"):
            monitoring.get_performance_graph(s, SYSTEM, settings, "controller", "", "cpu", "day")

    # a deleted VM takes its history with it
    operate(sqlite_engine, settings, web, "delete")
    assert not rrd.get_rrd_file(settings, web_identity).exists()
    assert rrd.get_rrd_file(settings, db_identity).exists()


def test_collection_records_the_controller_and_names_what_failed(
    sqlite_engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    ctx = TaskContext(
        1, C.TaskType.UPDATE_RRD, None, None, PeriodicParams(), 1, "w", sqlite_engine, settings
    )
    result = rrd.collect_rrds(ctx)
    assert result.status == C.TaskStatus.SUCCESS
    assert result.message == "0 host(s), 0 VM(s) and the controller recorded"
    controller = rrdtool.info(str(rrd.get_rrd_file(settings, rrd.CONTROLLER_IDENTITY)))
    assert float(controller["ds[ram].last_ds"]) > 0 and float(controller["ds[rx].last_ds"]) >= 0

    # an UP host nobody can reach over SSH (nothing listens on port 1)
    with session_scope(sqlite_engine) as s:
        s.add(
            Host(
                host_name="ghost",
                address="127.0.0.1",
                CPUs=2,
                status=C.HostStatus.UP,
                libvirt_uri=fake_host_uri(tmp_path, "ghost"),
                ssh_port=1,
            )
        )
    settings.ssh.connect_timeout_s = 2
    time.sleep(1)  # a new second for the controller's next row
    result = rrd.collect_rrds(ctx)
    assert result.status == C.TaskStatus.PARTIAL_SUCCESS
    assert result.message.startswith(
        "0 host(s), 0 VM(s) and the controller recorded; failed: ghost ("
    )
    assert not rrd.get_rrd_file(settings, rrd.host_identity("127.0.0.1")).exists()

    # a NAT box that is configured wrongly is named too, and nothing at all is a failure
    settings.nat.nat_type = C.NatType.SOFTWARE
    settings.nat.nat_ip = ""
    result = rrd.collect_rrds(ctx)
    assert "nat (nat.nat_type is software_nat but nat.nat_ip is empty)" in result.message
    shutil.rmtree(rrd.rrd_dir(settings))
    rrd.rrd_dir(settings).write_text("not a directory")
    result = rrd.collect_rrds(ctx)
    assert result.status == C.TaskStatus.FAILED
    assert result.message.startswith(C.TASK_FAILED_PREFIX + "0 host(s) and 0 VM(s) recorded")
    assert "controller ([Errno 17] File exists" in result.message


def test_prometheus_metrics_from_the_database_and_the_rrd_files(
    sqlite_engine: Engine, settings: Settings, cloud: Cloud
) -> None:
    web = create(sqlite_engine, settings, "web")
    create(sqlite_engine, settings, "db")
    operate(sqlite_engine, settings, web, "destroy")
    _, identity = hv_of(sqlite_engine, web)
    now = int(time.time())
    fed = DomainStats(250 * 10**9, 1, 300 * 2**20, 4096, 8192, 100, 200)
    rrd.update_vm_rrd(settings, identity, fed, now)

    text = prometheus.render_metrics(sqlite_engine, settings)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }

    def value(metric: str, /, **labels: str) -> float:
        return samples[(metric, tuple(sorted(labels.items())))]

    assert value("baadal_host_up", host="host1") == 1
    assert value("baadal_host_reserved", host="host1", resource="ram_mb") == 2 * 256
    assert value("baadal_vms", status="running") == 1
    assert value("baadal_vms", status="shutdown") == 1
    assert value("baadal_tasks", status="success") >= 3
    assert value("baadal_private_ips", vlan="vlan10", state="used") == 2
    vm = {"kind": "vm", "name": "web", "host": "host1"}
    assert value("baadal_memory_used_bytes", **vm) == 300 * 2**20
    assert value("baadal_cpu_seconds_total", **vm) == pytest.approx(250.0)
    assert value("baadal_disk_read_bytes_total", **vm) == 4096
    assert value("baadal_network_sent_bytes_total", **vm) == 200
    assert value("baadal_last_sample_timestamp_seconds", **vm) == now
    # a VM without history yet is simply not there
    assert not any(k[0] == "baadal_memory_used_bytes" and ("name", "db") in k[1] for k in samples)

    server = prometheus.metrics_server(sqlite_engine, settings, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            scraped = response.read().decode()
    finally:
        server.shutdown()
        server.server_close()
    assert 'baadal_host_up{host="host1"} 1.0' in scraped


def test_monitor_cli_on_the_controller(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BAADAL_DATABASE__URL", f"sqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.setenv("COLUMNS", "200")
    get_settings.cache_clear()
    runner = CliRunner()
    unready = runner.invoke(app, ["monitor", "collect"])
    assert unready.exit_code == 2 and "baadal db upgrade" in unready.output
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    collected = runner.invoke(app, ["monitor", "collect"])
    assert collected.exit_code == 0, collected.output
    assert "0 host(s), 0 VM(s) and the controller recorded" in collected.output
    shown = runner.invoke(app, ["monitor", "show", "controller", "--period", "hour"])
    assert shown.exit_code == 0 and "network received" in shown.output, shown.output
    out = tmp_path / "cpu.png"
    drawn = runner.invoke(app, ["monitor", "graph", "controller", "--out", str(out)])
    assert drawn.exit_code == 0 and out.read_bytes()[:4] == b"\x89PNG"
    nowhere = runner.invoke(app, ["monitor", "graph", "controller", "--out", "/nonexistent/x.png"])
    assert nowhere.exit_code == 2 and "cannot write /nonexistent/x.png" in nowhere.output
    unnamed = runner.invoke(app, ["monitor", "show", "vm"])
    assert unnamed.exit_code == 2 and "name the vm" in unnamed.output
    metrics = runner.invoke(app, ["monitor", "metrics"])
    assert 'baadal_memory_used_bytes{host="",kind="controller",name="controller"}' in (
        metrics.output
    )
    get_settings.cache_clear()


@pytest.mark.parametrize("address", [rrd.NAT_IDENTITY, rrd.CONTROLLER_IDENTITY, "10.0.0.5"])
def test_a_host_never_shares_the_nat_box_s_or_the_controller_s_file(
    settings: Settings, address: str
) -> None:
    """A host at address 'nat' or 'controller' wrote into the NAT box's or controller's."""
    mine = rrd.get_rrd_file(settings, rrd.host_identity(address))
    assert mine.name == f"host~{address.replace('.', '_')}.rrd"
    assert mine not in {rrd.get_rrd_file(settings, m) for m in rrd.MACHINE_TITLES}


def test_metrics_read_the_collection_summaries_not_every_file(
    sqlite_engine: Engine, settings: Settings, cloud: Cloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A collection batch sums up what it fed in one file per host; a scrape shows the
    same values from it as from every RRD file, without opening those (it looks only
    for the machines' files, which no summary of one host answers for)."""
    create(sqlite_engine, settings, "web")
    create(sqlite_engine, settings, "db")
    with contextlib.suppress(rrd.PartialCollection):  # the host's own counters need SSH
        rrd.update_rrd(sqlite_engine, settings, cloud.host_ids[0])
    assert [p.name for p in rrd.latest_dir(settings).iterdir()] == ["host-1.json"]
    kept = rrd.latest_dir(settings).with_name("kept")
    shutil.copytree(rrd.latest_dir(settings), kept)
    shutil.rmtree(rrd.latest_dir(settings))
    from_files = prometheus.render_metrics(sqlite_engine, settings)
    assert 'kind="vm",name="web"' in from_files and 'kind="vm",name="db"' in from_files
    shutil.copytree(kept, rrd.latest_dir(settings))

    def no_file_reads(path: str) -> dict[str, object]:
        assert not Path(path).exists(), f"{path} was read"
        raise rrdtool.OperationalError(f"opening '{path}': No such file or directory")

    monkeypatch.setattr(rrd.rrdtool, "info", no_file_reads)
    assert prometheus.render_metrics(sqlite_engine, settings) == from_files
    # a damaged summary is skipped: those VMs are read from their files again
    (rrd.latest_dir(settings) / "host-1.json").write_text("{not json")
    monkeypatch.undo()
    assert prometheus.render_metrics(sqlite_engine, settings) == from_files


def test_a_collection_pass_sums_up_its_hosts_in_one_file(
    sqlite_engine: Engine, settings: Settings, cloud: Cloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The periodic pass writes one summary for all its hosts (a file per host cost a
    temporary file and a rename each) and removes the per-host summaries it supersedes;
    a scrape shows from it what it shows from the RRD files. Its reads are two queries
    however many hosts there are."""
    create(sqlite_engine, settings, "web")
    create(sqlite_engine, settings, "db")
    with contextlib.suppress(rrd.PartialCollection):  # the host's own counters need SSH
        rrd.update_rrd(sqlite_engine, settings, cloud.host_ids[0])
    assert {p.name for p in rrd.latest_dir(settings).iterdir()} == {"host-1.json"}
    time.sleep(1)  # a new second: the pass's rows are newer
    statements: list[str] = []

    def seen(_conn: object, _cursor: object, statement: str, *_rest: object) -> None:
        statements.append(statement)

    event.listen(sqlite_engine, "before_cursor_execute", seen)
    try:
        report = rrd.update_all_rrds(sqlite_engine, settings)
    finally:
        event.remove(sqlite_engine, "before_cursor_execute", seen)
    assert report.vms == 2
    assert len([s for s in statements if s.startswith("SELECT")]) == 2
    assert {p.name for p in rrd.latest_dir(settings).iterdir()} == {"hosts.json"}
    summed = json.loads((rrd.latest_dir(settings) / "hosts.json").read_text())
    host = rrd.host_identity("127.0.0.1")
    assert set(summed) == {host, "controller", "nat", *vm_identities(sqlite_engine)}
    assert summed[host] is None and summed["nat"] is None  # no file: no SSH, no NAT box
    with_summary = prometheus.render_metrics(sqlite_engine, settings)
    shutil.rmtree(rrd.latest_dir(settings))
    assert prometheus.render_metrics(sqlite_engine, settings) == with_summary


def vm_identities(engine: Engine) -> list[str]:
    with session_scope(engine) as s:
        return list(s.scalars(select(VM.vm_identity)))


def test_after_a_pass_a_scrape_opens_no_rrd_file(
    sqlite_engine: Engine, settings: Settings, cloud: Cloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pass's summary answers for every subject of a scrape: what it fed, and what
    the files hold of those it did not (a host whose SSH fails, a host that is not UP and
    its VMs, the controller fed in the same second, no NAT box). A scrape then neither
    lists the RRD directory (27,500 files) nor opens a file, and shows what the files
    show."""
    create(sqlite_engine, settings, "web")
    create(sqlite_engine, settings, "db")
    address = "127.0.0.1"
    rrd.update_rrd_file(
        rrd.get_rrd_file(settings, rrd.host_identity(address)),
        rrd.RrdSample(int(time.time()) - STEP, 7, 8, 9, 10, 11, 12),
    )  # fed before its SSH broke
    rrd.update_all_rrds(sqlite_engine, settings)
    with session_scope(sqlite_engine) as s:
        s.execute(update(Host).values(status=C.HostStatus.DOWN))
    rrd.update_all_rrds(sqlite_engine, settings)  # no host UP, the controller's second
    summed = json.loads((rrd.latest_dir(settings) / "hosts.json").read_text())
    assert summed[rrd.host_identity(address)][1:] == [7, 8, 9, 10, 11, 12]
    kept = rrd.latest_dir(settings).with_name("kept")
    shutil.move(rrd.latest_dir(settings), kept)
    from_files = prometheus.render_metrics(sqlite_engine, settings)
    assert 'baadal_disk_read_bytes_total{host="host1",kind="host",name="host1"} 9.0' in (from_files)
    for labels in ('host="host1",kind="vm",name="web"', 'host="host1",kind="vm",name="db"',
                   'host="",kind="controller",name="controller"'):  # fmt: skip
        assert f"baadal_memory_used_bytes{{{labels}}}" in from_files
    shutil.move(kept, rrd.latest_dir(settings))

    def no_file_reads(path: str) -> dict[str, object]:
        raise AssertionError(f"{path} was read")

    def not_the_rrd_dir(listing: Callable[[str], Any]) -> Callable[[str], Any]:
        def listed(path: str) -> Any:
            assert Path(path) != rrd.rrd_dir(settings), "the RRD directory was listed"
            return listing(path)

        return listed

    monkeypatch.setattr(rrd.rrdtool, "info", no_file_reads)
    monkeypatch.setattr(os, "listdir", not_the_rrd_dir(os.listdir))
    monkeypatch.setattr(os, "scandir", not_the_rrd_dir(os.scandir))
    assert prometheus.render_metrics(sqlite_engine, settings) == from_files


def test_a_scrape_writes_the_rrd_lines_again_only_when_their_sources_change(
    sqlite_engine: Engine, settings: Settings, cloud: Cloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between two passes a scrape's RRD lines are the last scrape's; a new summary, a
    changed VM or host row, or a file no summary answers for makes them afresh."""
    web = create(sqlite_engine, settings, "web")
    rrd.update_all_rrds(sqlite_engine, settings)
    made: list[str] = []
    render = prometheus._render_history

    def counted(*args: object) -> str:
        made.append("text")
        return render(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(prometheus, "_render_history", counted)

    def scrape() -> str:
        return prometheus.render_metrics(sqlite_engine, settings)

    first = scrape()
    assert scrape() == first and len(made) == 1
    with session_scope(sqlite_engine) as s:
        s.execute(update(VM).where(VM.id == web).values(vm_name="web2"))
    assert 'kind="vm",name="web2"' in scrape() and len(made) == 2
    scrape()
    time.sleep(1)  # a new second for the pass's rows
    rrd.update_all_rrds(sqlite_engine, settings)
    scrape()
    assert len(made) == 3
    shutil.rmtree(rrd.latest_dir(settings))  # every subject read from its own file
    from_files = scrape()
    assert scrape() == from_files and len(made) == 4
    identity = vm_identities(sqlite_engine)[0]
    rrd.update_vm_rrd(settings, identity, stats(1, ram=12345), int(time.time()) + 1)
    assert 'kind="vm",name="web2"} 12345.0' in scrape() and len(made) == 5


def test_history_lines_are_what_prometheus_client_writes() -> None:
    """The RRD values are written as text by Baadal (fast); the lines must be the ones
    prometheus_client would write, escaping included."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import CounterMetricFamily
    from prometheus_client.registry import Collector

    name, host, value = 'we"b\\1\nx', "host 1", 1234567890123.0

    class One(Collector):
        def collect(self) -> Iterator[CounterMetricFamily]:
            family = CounterMetricFamily("baadal_disk_read_bytes", "bytes read from disk",
                                         labels=["kind", "name", "host"])  # fmt: skip
            family.add_metric(["vm", name, host], value)
            yield family

    registry = CollectorRegistry(auto_describe=False)
    registry.register(One())
    expected = generate_latest(registry).decode()
    vms = [("ORG~u~x", name, C.VMStatus.RUNNING, 1, host)]
    text = prometheus._subject_text(load_settings(), [], vms)
    assert expected.splitlines()[2] not in text  # no history file: no line
    rrd.record_latest(
        load_settings(), "host-1", {"ORG~u~x": rrd.RrdSample(5, 1, 2, value, 4, 5, 6)}
    )
    text = prometheus._subject_text(load_settings(), [], vms)
    block = text[text.index("# HELP baadal_disk_read_bytes_total") :].split("# HELP")[1]
    assert "# HELP" + block == expected


def test_host_lines_are_what_prometheus_client_writes() -> None:
    """The per-host families are written as text by Baadal too: the same lines."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import GaugeMetricFamily
    from prometheus_client.registry import Collector

    hosts = [('h"1\\x\ny', "10.0.0.1", C.HostStatus.UP, 64, 256, 1536, 5),
             ("h2", "10.0.0.2", C.HostStatus.MAINTENANCE, 8, 16.5, 0, 0)]  # fmt: skip

    class Hosts(Collector):
        def collect(self) -> Iterator[GaugeMetricFamily]:
            up = GaugeMetricFamily("baadal_host_up", "1 if the host is UP", labels=["host"])
            status = GaugeMetricFamily("baadal_host_status", "host status code (0 DOWN, "
                                       "1 UP, 2 MAINTENANCE)", labels=["host"])  # fmt: skip
            capacity = GaugeMetricFamily("baadal_host_capacity", "what the host has",
                                         labels=["host", "resource"])  # fmt: skip
            reserved = GaugeMetricFamily("baadal_host_reserved", "what its VMs reserve",
                                         labels=["host", "resource"])  # fmt: skip
            for name, _address, state, cpus, ram_gb, ram_used_mb, vcpus_used in hosts:
                up.add_metric([name], 1.0 if state == C.HostStatus.UP else 0.0)
                status.add_metric([name], float(state))
                capacity.add_metric([name, "vcpus"], float(cpus))
                capacity.add_metric([name, "ram_mb"], float(ram_gb) * 1024)
                reserved.add_metric([name, "vcpus"], float(vcpus_used))
                reserved.add_metric([name, "ram_mb"], float(ram_used_mb))
            yield from (up, status, capacity, reserved)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Hosts())
    assert (
        prometheus._host_text(hosts, prometheus._GoFloats()) == generate_latest(registry).decode()
    )
