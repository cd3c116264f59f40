"""Performance graphs drawn from the RRD history (the seed's create_graph): one PNG per identity, graph type and period, in
``<home>/<paths.graph_file_dir>``, replaced atomically so a page never shows a half-drawn
picture.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import rrdtool

from baadal.config import Settings
from baadal.errors import NoMeasurements, ValidationError
from baadal.files import replaced_atomically
from baadal.home import PRIVATE_FILE_MODE, private_dir
from baadal.monitor.rrd import get_rrd_file, graph_period_seconds

WIDTH_PX = 640
HEIGHT_PX = 200


@dataclass(frozen=True)
class Line:
    source: str
    label: str
    colour: str


@dataclass(frozen=True)
class GraphType:
    title: str
    unit: str
    lines: tuple[Line, ...]


#: the seed's graph types: cpu, ram, disk (read/write), nw (received/sent)
GRAPH_TYPES = {
    "cpu": GraphType("CPU", "percent", (Line("cpu", "CPU", "#d62728"),)),
    "ram": GraphType("Memory", "bytes", (Line("ram", "Memory used", "#1f77b4"),)),
    "disk": GraphType(
        "Disk", "bytes/s", (Line("dr", "Read", "#2ca02c"), Line("dw", "Written", "#ff7f0e"))
    ),
    "nw": GraphType(
        "Network", "bytes/s", (Line("rx", "Received", "#9467bd"), Line("tx", "Sent", "#8c564b"))
    ),
}


def graph_dir(settings: Settings) -> Path:
    return settings.home / settings.paths.graph_file_dir.strip("/")


def graph_type(name: str) -> GraphType:
    try:
        return GRAPH_TYPES[name]
    except KeyError:
        raise ValidationError(
            f"unknown graph type {name!r}; choose one of {', '.join(GRAPH_TYPES)}"
        ) from None


def _rrd_path_arg(path: Path) -> str:
    """rrdtool's DEF separates fields with ':', so a colon in the path is escaped."""
    return str(path).replace(":", "\\:")


def create_graph(
    settings: Settings, identity: str, kind: str, period: str, *, title: str | None = None
) -> Path:
    """Draw ``kind`` over the last ``period`` from the identity's RRD file; the PNG's path."""
    spec = graph_type(kind)
    seconds = graph_period_seconds(period)
    source = get_rrd_file(settings, identity)
    if not source.exists():
        raise NoMeasurements(f"no monitoring data for {identity!r} yet")
    out_dir = graph_dir(settings)
    private_dir(out_dir)
    target = out_dir / f"{identity}_{kind}_{period}.png"
    args = [
        "--imgformat", "PNG",
        "--start", f"-{seconds}",
        "--end", "now",
        "--title", f"{title or identity}: {spec.title} (last {period})",
        "--vertical-label", spec.unit,
        "--width", str(WIDTH_PX),
        "--height", str(HEIGHT_PX),
        "--lower-limit", "0",
    ]  # fmt: skip
    for line in spec.lines:
        args += [
            f"DEF:{line.source}={_rrd_path_arg(source)}:{line.source}:AVERAGE",
            f"LINE2:{line.source}{line.colour}:{line.label}",
            f"GPRINT:{line.source}:AVERAGE:average %8.2lf %s",
            f"GPRINT:{line.source}:MAX:max %8.2lf %s\\n",
        ]
    with replaced_atomically(target, PRIVATE_FILE_MODE) as private:
        rrdtool.graph(str(private), *args)
    return target
