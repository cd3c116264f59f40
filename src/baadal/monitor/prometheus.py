"""Prometheus metrics: the cloud's state from the database (hosts, VMs, tasks, address
pools) and each host's and VM's latest counters from its RRD file, so a scrape costs one
read of each file and touches no host. ``render_metrics`` gives the text a ``/metrics``
endpoint serves; ``baadal monitor metrics`` prints it and ``baadal monitor serve``
(``metrics_server``) answers scrapes until the web front door takes over.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import rrdtool
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from sqlalchemy import Engine, func, select

from baadal import address_pools
from baadal import constants as C
from baadal.config import Settings
from baadal.db.models import VM, Host, Task
from baadal.db.session import session_scope
from baadal.gcpause import paused_gc
from baadal.monitor import rrd

#: RRD data sources exported as counters: (source, metric suffix, help)
_COUNTERS = (
    ("dr", "disk_read_bytes", "bytes read from disk"),
    ("dw", "disk_written_bytes", "bytes written to disk"),
    ("rx", "network_received_bytes", "bytes received"),
    ("tx", "network_sent_bytes", "bytes sent"),
)


def _latest(settings: Settings, identity: str, files: set[str]) -> dict[str, float] | None:
    """The raw values last fed to the identity's RRD file, with its update time, read
    from the file (for files the collection pass has not summed up: fed by hand).
    ``files`` names the RRD files there are (one directory listing, not a stat each)."""
    if identity not in files:
        return None  # no history yet
    try:
        info = rrdtool.info(str(rrd.get_rrd_file(settings, identity)))
    except rrdtool.OperationalError:
        return None  # no history yet
    values = {"time": float(info["last_update"])}
    for name, _kind in rrd.SOURCES:
        raw = info.get(f"ds[{name}].last_ds")
        if raw not in (None, "U", ""):
            values[name] = float(raw)
    return values


def _rrd_files(settings: Settings) -> set[str]:
    """The identities that have an RRD file."""
    try:
        with os.scandir(rrd.rrd_dir(settings)) as entries:
            return {e.name[:-4] for e in entries if e.name.endswith(".rrd")}
    except (FileNotFoundError, NotADirectoryError):
        return set()


class _GoFloats(dict[float, str]):
    """prometheus_client's float text, worked out once per distinct value: a scrape of
    25,000 VMs writes 190,000 numbers, most of them zeros or a batch's timestamp."""

    def __missing__(self, value: float) -> str:
        text = self[value] = floatToGoString(value)
        return text


class BaadalCollector(Collector):
    """The cloud's totals from the database; :attr:`text` gets the families with a sample
    per host or VM, written as exposition text directly (for :func:`render_metrics` to
    append): through prometheus_client's families they took seconds for 25,000 VMs, most
    of it checking and escaping label names."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings
        self.text = ""

    def collect(self) -> Iterator[Metric]:
        with session_scope(self.engine, read=True) as session:
            hosts = session.execute(
                select(Host.host_name, Host.address, Host.status, Host.CPUs, Host.RAM,
                       Host.ram_used_mb, Host.vcpus_used).order_by(Host.host_name)
            ).all()  # fmt: skip
            vms = session.execute(
                select(VM.vm_identity, VM.vm_name, VM.status, VM.vCPU, Host.host_name)
                .outerjoin(Host, Host.id == VM.host_id)
                .order_by(VM.vm_identity)
            ).all()
            vm_counts = session.execute(select(VM.status, func.count()).group_by(VM.status)).all()
            tasks = session.execute(select(Task.status, func.count()).group_by(Task.status)).all()
            usage = address_pools.pool_usage(session)
            vlans = [
                address_pools.VlanUsage(*row) for row in session.execute(address_pools.vlan_usage())
            ]

        by_status = GaugeMetricFamily("baadal_vms", "VMs by status", labels=["status"])
        for label, count in sorted((C.VMStatus(s).name.lower(), n) for s, n in vm_counts):
            by_status.add_metric([label], count)
        yield by_status

        queue = GaugeMetricFamily("baadal_tasks", "tasks by status", labels=["status"])
        for status, count in sorted(tasks):
            queue.add_metric([C.TaskStatus(status).name.lower()], count)
        yield queue

        addresses = GaugeMetricFamily("baadal_private_ips", "private addresses per VLAN",
                                      labels=["vlan", "state"])  # fmt: skip
        for vlan in vlans:
            addresses.add_metric([vlan.name, "used"], vlan.used)
            addresses.add_metric([vlan.name, "free"], vlan.free)
        public = GaugeMetricFamily("baadal_public_ips", "public addresses", labels=["state"])
        public.add_metric(["used"], usage.public_used)
        public.add_metric(["free"], usage.public_free)
        yield from (addresses, public)

        go = _GoFloats()
        self.text = _host_text(hosts, go) + _history_text(self.settings, hosts, vms, go)


def _label(value: str) -> str:
    """A label value escaped as the text format wants it."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _families(families: dict[str, tuple[str, str, str, list[str]]]) -> str:
    """Exposition text of (name, type, help, sample lines after the name) families."""
    out = []
    for name, kind, text, lines in families.values():
        out.append(f"# HELP {name} {text}\n# TYPE {name} {kind}\n")
        out.extend(f"{name}{line}\n" for line in lines)
    return "".join(out)


def _host_text(hosts: Sequence[Any], go: _GoFloats) -> str:
    """Each host's state, capacity and reservations."""
    up: list[str] = []
    status: list[str] = []
    capacity: list[str] = []
    reserved: list[str] = []
    for name, _address, state, cpus, ram_gb, ram_used_mb, vcpus_used in hosts:
        host = f'{{host="{_label(name)}"'
        up.append(f"{host}}} {go[1.0 if state == C.HostStatus.UP else 0.0]}")
        status.append(f"{host}}} {go[float(state)]}")
        capacity.append(f'{host},resource="vcpus"}} {go[float(cpus)]}')
        capacity.append(f'{host},resource="ram_mb"}} {go[float(ram_gb) * 1024]}')
        reserved.append(f'{host},resource="vcpus"}} {go[float(vcpus_used)]}')
        reserved.append(f'{host},resource="ram_mb"}} {go[float(ram_used_mb)]}')
    return _families({
        "up": ("baadal_host_up", "gauge", "1 if the host is UP", up),
        "status": ("baadal_host_status", "gauge",
                   "host status code (0 DOWN, 1 UP, 2 MAINTENANCE)", status),
        "capacity": ("baadal_host_capacity", "gauge", "what the host has", capacity),
        "reserved": ("baadal_host_reserved", "gauge", "what its VMs reserve", reserved),
    })  # fmt: skip


def _history_text(
    settings: Settings, hosts: Sequence[Any], vms: Sequence[Any], go: _GoFloats | None = None
) -> str:
    """Latest RRD counters of hosts, VMs, the controller and the NAT box."""
    go = _GoFloats() if go is None else go
    families: dict[str, tuple[str, str, str, list[str]]] = {
        "cpu": ("baadal_cpu_seconds_total", "counter", "CPU time used", []),
        "ram": ("baadal_memory_used_bytes", "gauge", "memory in use", []),
        "time": ("baadal_last_sample_timestamp_seconds", "gauge",
                 "when the RRD file was last fed", []),
    }  # fmt: skip
    for source, suffix, text in _COUNTERS:
        families[source] = (f"baadal_{suffix}_total", "counter", text, [])
    subjects = [("host", name, name, rrd.host_identity(address), cpus)
                for name, address, _s, cpus, *_ in hosts]  # fmt: skip
    subjects += [("vm", name, host or "", identity, vcpus)
                 for identity, name, _s, vcpus, host in vms]  # fmt: skip
    subjects += [(kind, kind, "", kind, None) for kind in rrd.MACHINE_TITLES]
    recorded = rrd.read_latest(settings)
    files: set[str] | None = None
    counters = [(source, families[source][3]) for source, _suffix, _text in _COUNTERS]
    times, rams, cpu_lines = families["time"][3], families["ram"][3], families["cpu"][3]
    for kind, name, host, identity, cpus in subjects:
        latest = recorded.get(identity)
        if latest is None:
            files = _rrd_files(settings) if files is None else files
            latest = _latest(settings, identity, files)
            if latest is None:
                continue
        labels = f'{{host="{_label(host)}",kind="{kind}",name="{_label(name)}"}} '
        times.append(labels + go[latest["time"]])
        if "ram" in latest:
            rams.append(labels + go[latest["ram"]])
        if "cpu" in latest and cpus:  # cpu was fed in units of (CPUs x 10 ms)
            cpu_lines.append(labels + go[latest["cpu"] * cpus * 0.01])
        for source, lines in counters:
            if source in latest:
                lines.append(labels + go[latest[source]])
    return _families(families)


def render_metrics(engine: Engine, settings: Settings) -> str:
    """The Prometheus text exposition of everything above."""
    collector = BaadalCollector(engine, settings)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    with paused_gc():  # rows and text lines of every VM: no cycles (see baadal.gcpause)
        return generate_latest(registry).decode() + collector.text


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        return None  # scrapes every few seconds would flood stderr


def metrics_server(engine: Engine, settings: Settings, address: str, port: int) -> WSGIServer:
    """A server answering Prometheus scrapes on http://address:port/metrics once its
    ``serve_forever`` runs."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        body = render_metrics(engine, settings).encode()
        headers = [("Content-Type", CONTENT_TYPE_LATEST), ("Content-Length", str(len(body)))]
        start_response("200 OK", headers)
        return [body]

    return make_server(address, port, app, handler_class=_QuietHandler)
