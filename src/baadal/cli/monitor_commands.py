"""``baadal monitor collect|show|graph|network|metrics|serve``: RRD history of hosts and
VMs, its graphs, the host network graph and Prometheus metrics."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from baadal import constants as C
from baadal.cli.door import (
    actor,
    checked_engine,
    console,
    current_actor,
    db,
    handle_errors,
    print_table,
    read_db,
)
from baadal.config import get_settings
from baadal.errors import ValidationError
from baadal.services import measurements, monitoring

app = typer.Typer(help="Usage history of hosts and VMs (RRD) and its graphs.", no_args_is_help=True)

KindArg = Annotated[str, typer.Argument(help=" | ".join(monitoring.SUBJECT_KINDS))]
NameArg = Annotated[str, typer.Argument(help="VM or host name or id")]
PeriodOpt = Annotated[str, typer.Option(help=", ".join(C.GRAPH_PERIODS))]


def _rate(value: float | None, unit: str) -> str:
    return "no data" if value is None else f"{value:,.2f} {unit}"


def _copy_to(made: Path, out: Path) -> Path:
    try:
        shutil.copyfile(made, out)
    except OSError as exc:
        raise ValidationError(f"cannot write {out}: {exc.strerror or exc}") from None
    return out


@app.command("collect")
@handle_errors
def collect_cmd() -> None:
    """Record every UP host with its VMs, the controller and the NAT box now (the periodic
    job does this every 5 minutes)."""
    report = measurements.collect(checked_engine(), current_actor(), get_settings())
    console.print(report.summary(), highlight=False)
    if report.failures:
        raise typer.Exit(1)


@app.command("show")
@handle_errors
def show_cmd(kind: KindArg, name: NameArg = "", period: PeriodOpt = "day") -> None:
    """Average CPU, memory, disk and network use over the period."""
    with read_db() as session:
        data = monitoring.fetch_rrd_data(
            session, actor(session), get_settings(), kind, name, period
        )
    print_table(
        f"{kind} {name}".strip() + f": averages over the last {period}",
        ["what", "average"],
        [
            ("CPU", _rate(data.cpu, "%")),
            ("memory", _rate(None if data.ram is None else data.ram / 2**20, "MiB")),
            ("disk read", _rate(data.dr, "B/s")),
            ("disk written", _rate(data.dw, "B/s")),
            ("network received", _rate(data.rx, "B/s")),
            ("network sent", _rate(data.tx, "B/s")),
        ],
    )


@app.command("graph")
@handle_errors
def graph_cmd(
    kind: KindArg,
    name: NameArg = "",
    graph: Annotated[str, typer.Option("--type", help=", ".join(measurements.GRAPH_TYPES))] = "cpu",
    period: PeriodOpt = "day",
    out: Annotated[Path | None, typer.Option(help="copy the PNG here")] = None,
) -> None:
    """Draw a PNG graph of the history and print where it is."""
    with db() as session:
        path = monitoring.get_performance_graph(
            session, actor(session), get_settings(), kind, name, graph, period
        )
    if out is not None:
        path = _copy_to(path, out)
    console.print(str(path), highlight=False)


@app.command("network")
@handle_errors
def network_cmd(
    out: Annotated[Path | None, typer.Option(help="copy the SVG picture here")] = None,
) -> None:
    """Measure latency and throughput between every pair of UP hosts and draw the graph."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())  # fmt: skip
    with Progress(*columns, console=console, transient=True) as progress:
        bar = progress.add_task("measuring", total=None)
        graph, svg = measurements.measure_network(
            checked_engine(),
            current_actor(),
            get_settings(),
            on_start=lambda total: progress.update(bar, total=total),
            on_step=lambda what: progress.update(bar, advance=1, description=what),
        )
    names = {n.id: n.name for n in graph.nodes}
    print_table(
        "Host network",
        ["from", "to", "latency", "throughput"],
        [
            (names[e.source], names[e.target], e.latency_text, e.throughput_text)
            for e in graph.edges
        ],
    )
    print_table("Link speed", ["host", "speed"], [(n.name, n.label) for n in graph.nodes])
    if out is not None:
        svg = _copy_to(svg, out)
    console.print(str(svg), highlight=False)
    if not all(e.ok for e in graph.edges):
        raise typer.Exit(1)


@app.command("metrics")
@handle_errors
def metrics_cmd() -> None:
    """Print the Prometheus metrics (what `monitor serve` answers on /metrics)."""
    typer.echo(measurements.metrics(checked_engine(), current_actor(), get_settings()), nl=False)


@app.command("serve")
@handle_errors
def serve_cmd(
    address: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 9184,
) -> None:
    """Answer Prometheus scrapes on http://ADDRESS:PORT/metrics until interrupted."""
    engine, settings = checked_engine(), get_settings()
    server = measurements.metrics_server(engine, current_actor(), settings, address, port)
    console.print(f"serving metrics on http://{address}:{port}/metrics", highlight=False)
    with server, contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
