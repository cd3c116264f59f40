"""Prometheus metrics: the cloud's state from the database (hosts, VMs, tasks, address
pools) and each host's and VM's latest counters from its RRD file, so a scrape costs one
read of each file and touches no host. ``render_metrics`` gives the text a ``/metrics``
endpoint serves; ``baadal monitor metrics`` prints it and ``baadal monitor serve``
(``metrics_server``) answers scrapes until the web front door takes over.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import rrdtool
from prometheus_client import CollectorRegistry, generate_latest, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
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
    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings

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
        for vlan in usage.vlans:
            addresses.add_metric([vlan.name, "used"], vlan.used)
            addresses.add_metric([vlan.name, "free"], vlan.free)
        public = GaugeMetricFamily("baadal_public_ips", "public addresses", labels=["state"])
        public.add_metric(["used"], usage.public_used)
        public.add_metric(["free"], usage.public_free)
        yield from (addresses, public)

        yield from self._history(hosts, vms)

    def _history(self, hosts: Sequence[Any], vms: Sequence[Any]) -> Iterator[Metric]:
        """Latest RRD counters of hosts, VMs, the controller and the NAT box."""
        labels = ["kind", "name", "host"]
        cpu = CounterMetricFamily("baadal_cpu_seconds", "CPU time used", labels=labels)
        ram = GaugeMetricFamily("baadal_memory_used_bytes", "memory in use", labels=labels)
        updated = GaugeMetricFamily("baadal_last_sample_timestamp_seconds",
                                    "when the RRD file was last fed", labels=labels)  # fmt: skip
        counters = {
            source: CounterMetricFamily(f"baadal_{suffix}", text, labels=labels)
            for source, suffix, text in _COUNTERS
        }
        subjects = [("host", name, name, rrd.host_identity(address), cpus)
                    for name, address, _s, cpus, *_ in hosts]  # fmt: skip
        subjects += [("vm", name, host or "", identity, vcpus)
                     for identity, name, _s, vcpus, host in vms]  # fmt: skip
        subjects += [(kind, kind, "", kind, None) for kind in rrd.MACHINE_TITLES]
        recorded = rrd.read_latest(self.settings)
        for kind, name, host, identity, cpus in subjects:
            latest = recorded.get(identity) or _latest(self.settings, identity)
            if latest is None:
                continue
            key = [kind, name, host]
            updated.add_metric(key, latest["time"])
            if "ram" in latest:
                ram.add_metric(key, latest["ram"])
            if "cpu" in latest and cpus:  # cpu was fed in units of (CPUs x 10 ms)
                cpu.add_metric(key, latest["cpu"] * cpus * 0.01)
            for source, family in counters.items():
                if source in latest:
                    family.add_metric(key, latest[source])
        yield from (cpu, ram, updated, *counters.values())


def registry_for(engine: Engine, settings: Settings) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BaadalCollector(engine, settings))
    return registry


def render_metrics(engine: Engine, settings: Settings) -> str:
    """The Prometheus text exposition of everything above."""
    return generate_latest(registry_for(engine, settings)).decode()


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        return None  # scrapes every few seconds would flood stderr


def metrics_server(engine: Engine, settings: Settings, address: str, port: int) -> WSGIServer:
    """A server answering Prometheus scrapes on http://address:port/metrics once its
    ``serve_forever`` runs."""
    app = make_wsgi_app(registry_for(engine, settings))
    return make_server(address, port, app, handler_class=_QuietHandler)
