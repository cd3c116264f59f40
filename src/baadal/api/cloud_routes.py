"""The whole cloud (admins): its state at a glance; the shutdown and bootup of every VM,
which queue one task per VM and answer 202; the host network graph; and the Prometheus
metrics."""

from __future__ import annotations

from enum import StrEnum

from fastapi import APIRouter, Response

from baadal.api.callers import CallerDep, accepted, errors
from baadal.api.host_routes import queued_out
from baadal.api.schemas import BINARY, Accepted, CloudFinish, CloudLine, CloudStatusOut, QueuedOut
from baadal.services import cloud, measurements

router = APIRouter(tags=["cloud"])

GraphForm = StrEnum("GraphForm", {name: name for name in measurements.NETWORK_GRAPH_KINDS})
MEDIA_TYPES = {"svg": "image/svg+xml", "json": "application/json"}
#: the Prometheus text exposition format
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


def _status(who: CallerDep) -> CloudStatusOut:
    with who.transaction() as session:
        lines = dict(cloud.summary(session, who.actor))
    status = lines.pop("baadal status")
    return CloudStatusOut(
        status=status, lines=[CloudLine(name=name, state=state) for name, state in lines.items()]
    )


@router.get(
    "/cloud",
    response_model=CloudStatusOut,
    responses=errors(),
    summary="the cloud's status and counts of hosts, VMs, pools and tasks (admins)",
)
def status(who: CallerDep) -> CloudStatusOut:
    return _status(who)


@router.post(
    "/cloud/shutdown",
    status_code=202,
    response_model=QueuedOut,
    responses=errors(),
    summary="snapshot and power off every VM; once the tasks ended, POST /cloud/finish "
    '{"after": "shutdown"} (admins)',
)
def shutdown(who: CallerDep) -> QueuedOut:
    with who.transaction() as session:
        return queued_out(cloud.shutdown(session, who.actor))


@router.post(
    "/cloud/bootup",
    status_code=202,
    response_model=QueuedOut,
    responses=errors(),
    summary="revert and resume every VM the shutdown snapshotted; once the tasks ended, "
    'POST /cloud/finish {"after": "bootup"} (admins)',
)
def bootup(who: CallerDep) -> QueuedOut:
    with who.transaction() as session:
        return queued_out(cloud.bootup(session, who.actor))


@router.post(
    "/cloud/finish",
    response_model=CloudStatusOut,
    responses=errors(400),
    summary="record the cloud as down after a shutdown, or up after a bootup (admins)",
)
def finish(who: CallerDep, body: CloudFinish) -> CloudStatusOut:
    with who.transaction() as session:
        cloud.finish(session, who.actor, shutdown=body.after == "shutdown")
    return _status(who)


@router.get(
    "/network-graph",
    response_class=Response,
    responses={
        **errors(404),
        200: {
            "description": "the last measured graph: a picture, or its nodes and edges",
            "content": {"image/svg+xml": BINARY, "application/json": {}},
        },
    },
    summary="the host network graph as last measured: latency and throughput between "
    "every pair of UP hosts, as SVG or JSON (admins)",
)
def network_graph(who: CallerDep, form: GraphForm = GraphForm.svg) -> Response:
    path = measurements.network_graph_file(who.actor, who.settings, form.value)
    return Response(path.read_bytes(), media_type=MEDIA_TYPES[form.value])


@router.post(
    "/network-graph",
    status_code=202,
    response_model=Accepted,
    responses=errors(409),
    summary="measure the host network now (iperf3 between every pair of UP hosts) (admins)",
)
def measure_network(who: CallerDep, response: Response) -> Accepted:
    with who.transaction() as session:
        task_id = measurements.request_network_measurement(session, who.actor).id
    return accepted(task_id, response)


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        **errors(),
        200: {
            "description": "the Prometheus text exposition (hosts, VMs, tasks, pools)",
            "content": {PROMETHEUS_TEXT: {"schema": {"type": "string"}}},
        },
    },
    summary="Prometheus metrics; scrape with an admin's API token as a bearer token",
)
def metrics(who: CallerDep) -> Response:
    text = measurements.metrics(who.engine(), who.actor, who.settings)
    return Response(text, media_type=PROMETHEUS_TEXT)
