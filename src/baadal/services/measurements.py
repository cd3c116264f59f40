"""Measuring the cloud now, for the doors: record every UP host with its VMs, the
controller and the NAT box; measure the network between the hosts; the Prometheus
metrics (thin, guarded wrappers over :mod:`baadal.monitor` and
:mod:`baadal.host.network_graph`). Reading the recorded history is
:mod:`baadal.services.monitoring`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from wsgiref.simple_server import WSGIServer

from sqlalchemy import Engine

from baadal import constants as C
from baadal.config import Settings
from baadal.errors import ValidationError
from baadal.host import network_graph
from baadal.host.network_graph import NetworkGraph
from baadal.monitor import graphs, prometheus, rrd
from baadal.monitor.rrd import CollectionReport
from baadal.net.validators import check_int
from baadal.services.policy import Action, Actor, guarded

#: what ``monitoring.get_performance_graph`` draws
GRAPH_TYPES = tuple(graphs.GRAPH_TYPES)


@guarded(Action.MONITOR_CLOUD)
def collect(engine: Engine, actor: Actor, settings: Settings) -> CollectionReport:
    """Record every UP host with its VMs, the controller and the NAT box now (the
    periodic job does this every 5 minutes)."""
    return rrd.update_all_rrds(engine, settings)


@guarded(Action.MONITOR_CLOUD)
def measure_network(
    engine: Engine,
    actor: Actor,
    settings: Settings,
    *,
    on_start: Callable[[int], None] | None = None,
    on_step: Callable[[str], None] | None = None,
) -> tuple[NetworkGraph, Path]:
    """Latency and throughput between every pair of UP hosts; the graph and its SVG."""
    return network_graph.measure_network(engine, settings, on_start=on_start, on_step=on_step)


@guarded(Action.MONITOR_CLOUD, reads=True)
def network_picture(actor: Actor, settings: Settings) -> Path | None:
    """The host network graph's SVG as the last measurement drew it (the periodic job
    redraws it); None before the first measurement."""
    _json_path, svg_path = network_graph.graph_files(settings)
    return svg_path if svg_path.is_file() else None


@guarded(Action.MONITOR_CLOUD, reads=True)
def metrics(engine: Engine, actor: Actor, settings: Settings) -> str:
    """The Prometheus text exposition."""
    return prometheus.render_metrics(engine, settings)


@guarded(Action.MONITOR_CLOUD, reads=True)
def metrics_server(
    engine: Engine, actor: Actor, settings: Settings, address: str, port: int
) -> WSGIServer:
    """A server answering Prometheus scrapes on /metrics once its ``serve_forever`` runs."""
    check_int(port, "port", *C.PORT_RANGE)
    try:
        return prometheus.metrics_server(engine, settings, address, port)
    except OSError as exc:
        raise ValidationError(f"cannot listen on {address}:{port}: {exc.strerror or exc}") from None
