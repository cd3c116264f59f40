"""The host network graph (the seed's host_networking_graph): latency and throughput
between every pair of UP hosts, measured by the hosts themselves over SSH, and each
host's link speed; kept as JSON and drawn as an SVG picture.

Upstream used netperf and lshw and put nodes at random points of a 20 x 20 grid
(generate_axis, check_sublist). Here latency is ping's average round trip, throughput a
one-second iperf3 run against a server that takes exactly one client and gives up when
nobody comes, link speed the kernel's ``/sys/class/net/<dev>/speed`` of the interface
that carries the host's address, and nodes sit evenly on a circle, so the picture is the
same every time and no two nodes overlap. Pairs are measured one after another: transfers
running side by side would measure each other.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from xml.sax.saxutils import escape

from sqlalchemy import Engine, select

from baadal import constants as C
from baadal.config import Settings
from baadal.db.models import Host
from baadal.db.session import session_scope
from baadal.drivers.remote import RemoteTarget, execute_remote_cmd
from baadal.errors import RemoteCommandError
from baadal.filelock import flocked
from baadal.files import write_atomically
from baadal.home import PRIVATE_FILE_MODE, private_dir
from baadal.host.resources import interface_of
from baadal.tasks.registry import TaskContext, TaskResult, handler

log = logging.getLogger("baadal")

IPERF_PORT = 5201
IPERF_SECONDS = 1
#: the one-client iperf3 server exits after this long without a client
IPERF_IDLE_S = 15
#: pause before asking a server that was not listening yet again
IPERF_RETRY_S = 0.3
PING_COUNT = 5
GRAPH_JSON = "network.json"
GRAPH_SVG = "network.svg"
_RTT = re.compile(r"= [\d.]+/([\d.]+)/[\d.]+/[\d.]+ ms")
_SVG_SIZE = 640
_NODE_RADIUS = 28


@dataclass(frozen=True)
class Node:
    """The seed's node_attribute: id, place, label (link speed) and size."""

    id: int
    name: str
    address: str
    label: str
    x: float
    y: float
    size: int = 4


@dataclass(frozen=True)
class Edge:
    """The seed's edge_attribute: from ``source`` to ``target``, labelled
    "<latency> : <throughput>"."""

    id: str
    source: int
    target: int
    latency_ms: float | None
    throughput_mbps: float | None

    @property
    def latency_text(self) -> str:
        return "unreachable" if self.latency_ms is None else f"{self.latency_ms:.2f} ms"

    @property
    def throughput_text(self) -> str:
        return "failed" if self.throughput_mbps is None else f"{self.throughput_mbps:.0f} Mbit/s"

    @property
    def ok(self) -> bool:
        return self.latency_ms is not None and self.throughput_mbps is not None

    @property
    def label(self) -> str:
        return f"{self.latency_text} : {self.throughput_text}"


@dataclass(frozen=True)
class NetworkGraph:
    nodes: list[Node]
    edges: list[Edge]


# --------------------------------------------------------------------------- parsers


def parse_ping_rtt(output: str) -> float | None:
    """The average round trip (ms) of ``ping -q``'s summary; None if nothing came back."""
    match = _RTT.search(output)
    return float(match.group(1)) if match else None


def parse_iperf3_mbps(output: str) -> float:
    """Received bits per second of an ``iperf3 -J`` client run, in Mbit/s."""
    try:
        report = json.loads(output)
        return round(report["end"]["sum_received"]["bits_per_second"] / 1e6, 1)
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"unexpected iperf3 output: {output[:200]!r}") from None


def format_link_speed(mbps: int | None) -> str:
    """1000 -> "1Gbit/s" (the seed's form), 100 -> "100Mbit/s", unknown -> "unknown"."""
    if mbps is None or mbps <= 0:
        return "unknown"
    if mbps >= 1000 and mbps % 1000 == 0:
        return f"{mbps // 1000}Gbit/s"
    return f"{mbps}Mbit/s"


# --------------------------------------------------------------------------- measurements


def get_latency_btw_hosts(host: Host, next_host_ip: str, settings: Settings) -> float | None:
    """Average ping round trip in ms from ``host`` to ``next_host_ip``; None = no answer."""
    argv = ["ping", "-n", "-q", "-c", str(PING_COUNT), "-i", "0.2", "-W", "1", next_host_ip]
    result = execute_remote_cmd(
        RemoteTarget.for_host(host, settings), argv, timeout=PING_COUNT + 10, check=False
    )
    return parse_ping_rtt(result.stdout)


def get_bandwidth_of_host(host: Host, settings: Settings) -> str:
    """The link speed of the interface carrying the host's address, e.g. "10Gbit/s"."""
    target = RemoteTarget.for_host(host, settings)
    device = interface_of(target)
    speed = execute_remote_cmd(target, ["cat", f"/sys/class/net/{device}/speed"], check=False)
    try:
        return format_link_speed(int(speed.stdout.strip()) if speed.ok else None)
    except ValueError:
        return "unknown"


def get_throughput_btw_hosts(host: Host, next_host: Host, settings: Settings) -> float | None:
    """Mbit/s ``host`` sends to ``next_host`` in one second of iperf3; None if it failed."""
    server = RemoteTarget.for_host(next_host, settings)
    port = str(IPERF_PORT)
    try:
        execute_remote_cmd(
            server,
            ["iperf3", "-s", "-1", "-D", "--idle-timeout", str(IPERF_IDLE_S), "-p", port,
             "-B", next_host.address],
        )  # fmt: skip
        client = [
            "iperf3", "-c", next_host.address, "-p", port, "-t", str(IPERF_SECONDS), "-J",
            "--connect-timeout", "3000",
        ]  # fmt: skip
        target = RemoteTarget.for_host(host, settings)
        for _attempt in range(5):  # the daemon may not be listening yet
            result = execute_remote_cmd(target, client, timeout=IPERF_SECONDS + 20, check=False)
            if result.ok:
                return parse_iperf3_mbps(result.stdout)
            if "refused" not in result.stdout + result.stderr:
                break
            time.sleep(IPERF_RETRY_S)
        log.warning("iperf3 %s -> %s failed: %s", host.host_name, next_host.host_name,
                    (result.stdout + result.stderr)[-300:])  # fmt: skip
    except (RemoteCommandError, ValueError) as exc:
        log.warning("throughput %s -> %s: %s", host.host_name, next_host.host_name, exc)
    return None


# --------------------------------------------------------------------------- the graph


def node_positions(count: int, size: float = _SVG_SIZE) -> list[tuple[float, float]]:
    """Evenly on a circle (replaces the seed's random generate_axis/check_sublist)."""
    if count == 1:
        return [(size / 2, size / 2)]
    radius = size / 2 - 2.5 * _NODE_RADIUS
    return [
        (
            round(size / 2 + radius * math.cos(2 * math.pi * i / count - math.pi / 2), 1),
            round(size / 2 + radius * math.sin(2 * math.pi * i / count - math.pi / 2), 1),
        )
        for i in range(count)
    ]


def node_attribute(i: int, host: Host, settings: Settings, place: tuple[float, float]) -> Node:
    try:
        label = get_bandwidth_of_host(host, settings)
    except RemoteCommandError as exc:
        log.warning("link speed of %s: %s", host.host_name, exc)
        label = "unknown"
    return Node(i, host.host_name, host.address, label, place[0], place[1])


def edge_attribute(k: int, i: int, j: int, host: Host, next_host: Host, settings: Settings) -> Edge:
    try:
        latency = get_latency_btw_hosts(host, next_host.address, settings)
    except RemoteCommandError as exc:
        log.warning("latency %s -> %s: %s", host.host_name, next_host.host_name, exc)
        latency = None
    throughput = (
        get_throughput_btw_hosts(host, next_host, settings) if latency is not None else None
    )
    return Edge(str(k), i, j, latency, throughput)


def measurement_count(hosts: int) -> int:
    """Link speeds plus ordered pairs: how many steps a measurement has."""
    return hosts * hosts


def collect_data_from_host(
    hosts: list[Host], settings: Settings, on_step: Callable[[str], None] | None = None
) -> NetworkGraph:
    """Measure every ordered pair of ``hosts``; ``on_step`` hears of each finished step
    (:func:`measurement_count` in all), for a progress display."""
    step = on_step or (lambda _what: None)
    places = node_positions(len(hosts))
    nodes = []
    for i, host in enumerate(hosts):
        nodes.append(node_attribute(i, host, settings, places[i]))
        step(f"link speed of {host.host_name}")
    edges = []
    for i, host in enumerate(hosts):
        for j, next_host in enumerate(hosts):
            if i != j:
                edges.append(edge_attribute(len(edges), i, j, host, next_host, settings))
                step(f"{host.host_name} -> {next_host.host_name}")
    return NetworkGraph(nodes, edges)


def graph_files(settings: Settings) -> tuple[Path, Path]:
    directory = settings.home / settings.paths.graph_file_dir.strip("/")
    return directory / GRAPH_JSON, directory / GRAPH_SVG


def render_svg(graph: NetworkGraph) -> str:
    """Nodes as circles named with their link speed; one arrow per measured direction,
    labelled near its source (the two directions of a pair differ)."""
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_SVG_SIZE}" height="{_SVG_SIZE}" '
        f'viewBox="0 0 {_SVG_SIZE} {_SVG_SIZE}" font-family="sans-serif" font-size="11">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#555"/></marker></defs>',
        f'<rect width="{_SVG_SIZE}" height="{_SVG_SIZE}" fill="white"/>',
    ]
    by_id = {n.id: n for n in graph.nodes}
    for edge in graph.edges:
        a, b = by_id[edge.source], by_id[edge.target]
        length = math.hypot(b.x - a.x, b.y - a.y) or 1.0
        ux, uy = (b.x - a.x) / length, (b.y - a.y) / length
        nx, ny = -uy * 6, ux * 6  # the two directions run side by side
        x1, y1 = a.x + ux * _NODE_RADIUS + nx, a.y + uy * _NODE_RADIUS + ny
        x2, y2 = b.x - ux * _NODE_RADIUS + nx, b.y - uy * _NODE_RADIUS + ny
        colour = "#c00" if edge.latency_ms is None else "#555"
        parts.append(
            f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{colour}" '
            f'stroke-width="1.5" marker-end="url(#arrow)"/>'
        )
        lx, ly = x1 + (x2 - x1) * 0.3 + nx * 2, y1 + (y2 - y1) * 0.3 + ny * 2
        parts.append(
            f'<text x="{lx:.1f}" y="{ly:.1f}" text-anchor="middle">{escape(edge.label)}</text>'
        )
    for node in graph.nodes:
        parts.append(
            f'<circle cx="{node.x}" cy="{node.y}" r="{_NODE_RADIUS}" fill="#dbe9f6" '
            f'stroke="#1f77b4" stroke-width="2"/>'
        )
        parts.append(
            f'<text x="{node.x}" y="{node.y - 2}" text-anchor="middle" font-weight="bold">'
            f"{escape(node.name)}</text>"
        )
        parts.append(
            f'<text x="{node.x}" y="{node.y + 12}" text-anchor="middle">{escape(node.label)}</text>'
        )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def save_graph(graph: NetworkGraph, settings: Settings) -> tuple[Path, Path]:
    """Write the JSON (nodes and edges as the seed's web page drew them) and the SVG."""
    json_path, svg_path = graph_files(settings)
    private_dir(json_path.parent)
    data = {
        "nodes": [asdict(n) for n in graph.nodes],
        "edges": [{**asdict(e), "label": e.label} for e in graph.edges],
    }
    write_atomically(json_path, json.dumps(data, indent=1) + "\n", PRIVATE_FILE_MODE)
    write_atomically(svg_path, render_svg(graph), PRIVATE_FILE_MODE)
    return json_path, svg_path


def up_hosts(engine: Engine) -> list[Host]:
    with session_scope(engine) as session:
        hosts = list(
            session.scalars(
                select(Host).where(Host.status == C.HostStatus.UP).order_by(Host.host_name)
            )
        )
        session.expunge_all()
    return hosts


def measure_network(
    engine: Engine,
    settings: Settings,
    on_start: Callable[[int], None] | None = None,
    on_step: Callable[[str], None] | None = None,
) -> tuple[NetworkGraph, Path]:
    """Measure the UP hosts, save the graph, return it and the picture's path;
    ``on_start`` hears how many steps there will be."""
    hosts = up_hosts(engine)
    if on_start is not None:
        on_start(measurement_count(len(hosts)))
    # one measurement at a time (the CLI and the periodic job): two would share the
    # links, and the iperf3 port, and measure each other
    locks = settings.home / "locks"
    private_dir(locks)
    with flocked(locks / "network-graph.lock"):
        graph = collect_data_from_host(hosts, settings, on_step)
        _json_path, svg_path = save_graph(graph, settings)
    return graph, svg_path


@handler(C.TaskType.HOST_NETWORK_GRAPH, periodic=("network_graph",))
def network_graph_task(ctx: TaskContext) -> TaskResult:
    """The periodic 'Host Network Graph' handler (upstream's networking_host, every 4 h)."""
    graph, _svg = measure_network(ctx.engine, ctx.settings)
    broken = [e for e in graph.edges if not e.ok]
    message = f"{len(graph.nodes)} host(s), {len(graph.edges)} link(s) measured"
    if not broken:
        return TaskResult.success(message)
    names = {n.id: n.name for n in graph.nodes}
    message += "; failed: " + ", ".join(f"{names[e.source]}->{names[e.target]}" for e in broken)
    if len(broken) == len(graph.edges):
        return TaskResult.failed(C.TASK_FAILED_PREFIX + message)
    return TaskResult(C.TaskStatus.PARTIAL_SUCCESS, message)
