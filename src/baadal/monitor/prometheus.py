"""Prometheus metrics: the cloud's state from the database (hosts, VMs, tasks, address
pools) and each host's and VM's latest counters from the collection's summary of its RRD
file (the file itself only for what no summary answers for), so a scrape touches no host
and, after a collection pass, no RRD file. ``render_metrics`` gives the text a ``/metrics``
endpoint serves; ``baadal monitor metrics`` prints it and ``baadal monitor serve``
(``metrics_server``) answers scrapes until the web front door takes over.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

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
            rows = session.connection()  # plain rows: the ORM's row handling was 1/4 of it
            hosts = rows.execute(
                select(Host.host_name, Host.address, Host.status, Host.CPUs, Host.RAM,
                       Host.ram_used_mb, Host.vcpus_used).order_by(Host.host_name)
            ).all()  # fmt: skip
            vms = rows.execute(
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

        self.text = _subject_text(self.settings, hosts, vms)


def _label(value: str) -> str:
    """A label value escaped as the text format wants it."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _families(families: dict[str, tuple[str, str, str, list[str]]]) -> str:
    """Exposition text of (name, type, help, sample lines after the name) families."""
    out = []
    for name, kind, text, lines in families.values():
        out.append(f"# HELP {name} {text}\n# TYPE {name} {kind}\n")
        if lines:  # one join per family, not a string per line
            out.append(name + f"\n{name}".join(lines) + "\n")
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


@dataclass(frozen=True)
class _Subjects:
    """The per-host and per-VM families a scrape wrote and everything they were made
    of: the same rows, summaries and files give the same text (a pass writes a summary
    every 300 s; Prometheus scrapes every 15-60 s)."""

    hosts: list[Any]
    vms: list[Any]
    summaries: list[tuple[str, bytes]]
    #: what the subjects no summary answers for hold in their own files
    files: dict[str, rrd.LastValues | None]
    text: str


#: the last scrape's per-subject text (a long-running server or API process scrapes again)
_last_subjects: _Subjects | None = None


def _subject_text(settings: Settings, hosts: Sequence[Any], vms: Sequence[Any]) -> str:
    """Each host's state and every host's, VM's and machine's latest RRD counters: from
    the collection's summaries, and from their own files for the subjects no summary
    answers for; the last scrape's text when none of these changed (a scrape of 25,000
    VMs spent most of its time writing the same lines again)."""
    global _last_subjects
    summaries = rrd.read_summaries(settings)
    last = _last_subjects
    if (
        last is not None
        and last.summaries == summaries
        and last.hosts == hosts
        and last.vms == vms
        and _read_files(settings, last.files) == last.files
    ):
        return last.text
    subjects = [("host", name, name, rrd.host_identity(address), cpus)
                for name, address, _s, cpus, *_ in hosts]  # fmt: skip
    subjects += [("vm", name, host or "", identity, vcpus)
                 for identity, name, _s, vcpus, host in vms]  # fmt: skip
    subjects += [(kind, kind, "", kind, None) for kind in rrd.MACHINE_TITLES]
    recorded = rrd.merge_summaries(summaries)
    files = _read_files(settings, (s[3] for s in subjects if s[3] not in recorded))
    go = _GoFloats()
    text = _host_text(hosts, go) + _render_history(subjects, recorded | files, go)
    _last_subjects = _Subjects(list(hosts), list(vms), summaries, files, text)
    return text


def _read_files(settings: Settings, identities: Iterable[str]) -> dict[str, rrd.LastValues | None]:
    """What the identities' own RRD files hold (None: no file)."""
    return {i: rrd.last_values(rrd.get_rrd_file(settings, i)) for i in identities}


def _render_history(
    subjects: list[tuple[str, str, str, str, int | None]],
    values_of: dict[str, rrd.LastValues | None],
    go: _GoFloats,
) -> str:
    families: dict[str, tuple[str, str, str, list[str]]] = {
        "cpu": ("baadal_cpu_seconds_total", "counter", "CPU time used", []),
        "ram": ("baadal_memory_used_bytes", "gauge", "memory in use", []),
        "time": ("baadal_last_sample_timestamp_seconds", "gauge",
                 "when the RRD file was last fed", []),
    }  # fmt: skip
    for source, suffix, text in _COUNTERS:
        families[source] = (f"baadal_{suffix}_total", "counter", text, [])
    column = {name: i for i, name in enumerate(("time", *(n for n, _kind in rrd.SOURCES)))}
    counters = [(column[source], families[source][3]) for source, _suffix, _text in _COUNTERS]
    times, rams, cpu_lines = families["time"][3], families["ram"][3], families["cpu"][3]
    cpu_at, ram_at = column["cpu"], column["ram"]
    for kind, name, host, identity, cpus in subjects:
        values = values_of[identity]
        if values is None:
            continue  # no history yet
        labels = f'{{host="{_label(host)}",kind="{kind}",name="{_label(name)}"}} '
        times.append(labels + go[values[0]])
        if values[ram_at] is not None:
            rams.append(labels + go[values[ram_at]])
        if values[cpu_at] is not None and cpus:  # fed in units of (CPUs x 10 ms)
            cpu_lines.append(labels + go[values[cpu_at] * cpus * 0.01])
        for at, lines in counters:
            if values[at] is not None:
                lines.append(labels + go[values[at]])
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
