"""Prometheus metrics: the cloud's state from the database (hosts, VMs, tasks, address
pools) and each host's and VM's latest counters from its RRD file, so a scrape costs one
read of each file and touches no host. ``render_metrics`` gives the text a ``/metrics``
endpoint serves; ``baadal monitor metrics`` prints it and ``baadal monitor serve``
(``metrics_server``) answers scrapes until the web front door takes over.
"""

from __future__ import annotations

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
from baadal.monitor import rrd

#: RRD data sources exported as counters: (source, metric suffix, help)
_COUNTERS = (
    ("dr", "disk_read_bytes", "bytes read from disk"),
    ("dw", "disk_written_bytes", "bytes written to disk"),
    ("rx", "network_received_bytes", "bytes received"),
    ("tx", "network_sent_bytes", "bytes sent"),
)


def _latest(settings: Settings, identity: str) -> dict[str, float] | None:
    """The raw values last fed to the identity's RRD file, with its update time, read
    from the file (for files the collection pass has not summed up: fed by hand)."""
    path = rrd.get_rrd_file(settings, identity)
    if not path.exists():
        return None  # no history yet
    try:
        info = rrdtool.info(str(path))
    except rrdtool.OperationalError:
        return None  # no history yet
    values = {"time": float(info["last_update"])}
    for name, _kind in rrd.SOURCES:
        raw = info.get(f"ds[{name}].last_ds")
        if raw not in (None, "U", ""):
            values[name] = float(raw)
    return values


class BaadalCollector(Collector):
    """The cloud's state from the database; :attr:`history` gets the RRD values of the
    hosts and VMs it read (text for :func:`render_metrics` to append)."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings
        self.history = ""

    def collect(self) -> Iterator[Metric]:
        with session_scope(self.engine) as session:
            hosts = session.execute(
                select(Host.host_name, Host.address, Host.status, Host.CPUs, Host.RAM,
                       Host.ram_used_mb, Host.vcpus_used).order_by(Host.host_name)
            ).all()  # fmt: skip
            vms = session.execute(
                select(VM.vm_identity, VM.vm_name, VM.status, VM.vCPU, Host.host_name)
                .outerjoin(Host, Host.id == VM.host_id)
                .order_by(VM.vm_identity)
            ).all()
            tasks = session.execute(select(Task.status, func.count()).group_by(Task.status)).all()
            usage = address_pools.pool_usage(session)
            vlans = [
                address_pools.VlanUsage(*row) for row in session.execute(address_pools.vlan_usage())
            ]

        up = GaugeMetricFamily("baadal_host_up", "1 if the host is UP", labels=["host"])
        info = GaugeMetricFamily("baadal_host_status", "host status code (0 DOWN, 1 UP, "
                                 "2 MAINTENANCE)", labels=["host"])  # fmt: skip
        capacity = GaugeMetricFamily("baadal_host_capacity", "what the host has",
                                     labels=["host", "resource"])  # fmt: skip
        reserved = GaugeMetricFamily("baadal_host_reserved", "what its VMs reserve",
                                     labels=["host", "resource"])  # fmt: skip
        for name, _address, status, cpus, ram_gb, ram_used_mb, vcpus_used in hosts:
            up.add_metric([name], 1.0 if status == C.HostStatus.UP else 0.0)
            info.add_metric([name], float(status))
            capacity.add_metric([name, "vcpus"], float(cpus))
            capacity.add_metric([name, "ram_mb"], float(ram_gb) * 1024)
            reserved.add_metric([name, "vcpus"], float(vcpus_used))
            reserved.add_metric([name, "ram_mb"], float(ram_used_mb))
        yield from (up, info, capacity, reserved)

        by_status = GaugeMetricFamily("baadal_vms", "VMs by status", labels=["status"])
        counts: dict[str, int] = {}
        for _identity, _name, status, _vcpus, _host in vms:
            label = C.VMStatus(status).name.lower()
            counts[label] = counts.get(label, 0) + 1
        for label in sorted(counts):
            by_status.add_metric([label], counts[label])
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

        self.history = _history_text(self.settings, hosts, vms)


def _label(value: str) -> str:
    """A label value escaped as the text format wants it."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _history_text(settings: Settings, hosts: Sequence[Any], vms: Sequence[Any]) -> str:
    """Latest RRD counters of hosts, VMs, the controller and the NAT box, as exposition
    text written here: through prometheus_client's families this took seconds for
    25,000 VMs (seven samples each), most of it checking and escaping label names."""
    families: dict[str, tuple[str, str, list[str]]] = {
        "cpu": ("baadal_cpu_seconds_total", "counter", []),
        "ram": ("baadal_memory_used_bytes", "gauge", []),
        "time": ("baadal_last_sample_timestamp_seconds", "gauge", []),
    }
    helps = {"cpu": "CPU time used", "ram": "memory in use",
             "time": "when the RRD file was last fed"}  # fmt: skip
    for source, suffix, text in _COUNTERS:
        families[source] = (f"baadal_{suffix}_total", "counter", [])
        helps[source] = text
    subjects = [("host", name, name, rrd.host_identity(address), cpus)
                for name, address, _s, cpus, *_ in hosts]  # fmt: skip
    subjects += [("vm", name, host or "", identity, vcpus)
                 for identity, name, _s, vcpus, host in vms]  # fmt: skip
    subjects += [(kind, kind, "", kind, None) for kind in rrd.MACHINE_TITLES]
    recorded = rrd.read_latest(settings)
    counters = [source for source, _suffix, _text in _COUNTERS]
    for kind, name, host, identity, cpus in subjects:
        latest = recorded.get(identity) or _latest(settings, identity)
        if latest is None:
            continue
        labels = f'{{host="{_label(host)}",kind="{kind}",name="{_label(name)}"}} '
        families["time"][2].append(labels + floatToGoString(latest["time"]))
        if "ram" in latest:
            families["ram"][2].append(labels + floatToGoString(latest["ram"]))
        if "cpu" in latest and cpus:  # cpu was fed in units of (CPUs x 10 ms)
            families["cpu"][2].append(labels + floatToGoString(latest["cpu"] * cpus * 0.01))
        for source in counters:
            if source in latest:
                families[source][2].append(labels + floatToGoString(latest[source]))
    out = []
    for key in ("cpu", "ram", "time", *counters):
        name, kind, lines = families[key]
        out.append(f"# HELP {name} {helps[key]}\n# TYPE {name} {kind}\n")
        out.extend(f"{name}{line}\n" for line in lines)
    return "".join(out)


def render_metrics(engine: Engine, settings: Settings) -> str:
    """The Prometheus text exposition of everything above."""
    collector = BaadalCollector(engine, settings)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return generate_latest(registry).decode() + collector.history


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
