"""RRD history of every VM and host (the seed's rrd_graph, vm_rrd and host_rrd modules).

One file per VM (``<vm_identity>.rrd``), per host (``host~<address>.rrd``, ``_`` for
``.``), and for the controller and the NAT box (``controller.rrd``, ``nat.rrd``) in
``<home>/<paths.vm_rrds_dir>``. Monitoring history is the controller's own state, so
it lives with the controller, not on a datastore the controller may not be able to write.

Step 300 s, heartbeat 550 s and the upstream's data sources (cpu ram dr dw tx rx; the
IPMI temperature and power sources upstream added for hosts are not collected). Upstream computed rates itself from a remembered previous sample;
here CPU time, disk and network bytes are DERIVE counters and rrdtool makes the rates,
so no sample has to survive between runs or worker processes, a missed run is a gap
rather than a wrong value, and a counter that starts again (a rebooted VM) costs one
unknown step. CPU time is fed in units of (CPUs x 10 ms): its rate per second is the
CPU percentage. A VM that is not running is recorded as zero.

Archives: upstream kept 200,000 raw rows per file (9.6 MB per VM); these keep what the
five graph periods draw (a week of 5-minute rows, two months of hours, two years of
days; average and maximum), about 0.4 MB per VM.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import rrdtool
from sqlalchemy import Engine, select

from baadal import constants as C
from baadal.config import Settings
from baadal.db.models import VM, Host
from baadal.db.session import session_scope
from baadal.drivers import hypervisor_for
from baadal.drivers.base import DomainStats
from baadal.drivers.remote import RemoteTarget
from baadal.errors import BaadalError, NotFoundError, ValidationError, user_message
from baadal.filelock import flocked
from baadal.files import replaced_atomically, write_atomically
from baadal.gcpause import paused_gc
from baadal.home import PRIVATE_FILE_MODE, private_dir
from baadal.host.usage import (
    SECTOR_BYTES,
    HostCounters,
    cpu_count,
    sample_counters,
    sample_host_counters,
)
from baadal.net.nat_box import nat_box_target
from baadal.net.validators import check_identity
from baadal.tasks.registry import TaskContext, TaskResult, handler

log = logging.getLogger("baadal.rrd")

#: data sources in file order: (name, type), the same for VMs and hosts
SOURCES = (
    ("cpu", "DERIVE"),
    ("ram", "GAUGE"),
    ("dr", "DERIVE"),
    ("dw", "DERIVE"),
    ("tx", "DERIVE"),
    ("rx", "DERIVE"),
)
#: (steps per row, rows): 5 minutes for a week, hours for 62 days, days for 800 days
ARCHIVES = ((1, 2016), (12, 1488), (288, 800))
_CPU_UNIT_NS = 10_000_000  # 1 % of one CPU for one second
_IDENTITY_MAX = 200
#: rrdtool's complaint about a row that is not newer than the last one
_STALE_UPDATE = "minimum one second step"
#: VMs with a history: installed ones (an install still queued may yet fail and go)
_INSTALLED = (C.VMStatus.RUNNING, C.VMStatus.SUSPENDED, C.VMStatus.SHUTDOWN)
#: the RRD identities of the controller and the NAT box
CONTROLLER_IDENTITY = "controller"
NAT_IDENTITY = "nat"
MACHINE_TITLES = {CONTROLLER_IDENTITY: "the controller", NAT_IDENTITY: "the NAT box"}
#: machines read in parallel by one collection run
COLLECT_THREADS = 8
#: the last values of every file a collection batch answers for, one JSON file per batch
LATEST_DIR = "latest"
#: the batch name of a whole collection pass (one host alone: ``host-<id>``)
HOSTS_BATCH = "hosts"
_LATEST_FIELDS = ("timestamp", *(name for name, _kind in SOURCES))
#: a file's last values as a scrape reads them: (time, cpu, ram, dr, dw, tx, rx), None for
#: a source the file holds no value of (``U``)
LastValues = list[float | None]


class PartialCollection(BaadalError):
    """A host's VMs were recorded (``vms`` files) but its own counters could not be."""

    def __init__(self, vms: int, cause: BaseException) -> None:
        self.vms = vms
        super().__init__(user_message(cause))


@dataclass(frozen=True)
class RrdSample:
    """One row for an RRD file: counters (cpu dr dw tx rx) and the RAM gauge as read."""

    timestamp: int
    cpu: int  # CPU time in units of (CPUs x 10 ms)
    ram: int  # bytes in use
    dr: int  # cumulative bytes read
    dw: int  # cumulative bytes written
    tx: int  # cumulative bytes sent
    rx: int  # cumulative bytes received


@dataclass(frozen=True)
class RrdAverages:
    """The seed's fetch_rrd_data result: averages over the period, None = no data."""

    ram: float | None
    cpu: float | None
    dr: float | None
    dw: float | None
    tx: float | None
    rx: float | None


@dataclass(frozen=True)
class RrdPeaks:
    """The highest CPU % and network rates (bytes/s) of a window, and the share of its
    rows that hold data at all (0 when there is no file)."""

    cpu: float | None
    rx: float | None
    tx: float | None
    known: float


@dataclass
class CollectionReport:
    """What one collection run recorded."""

    hosts: list[str] = field(default_factory=list)
    vms: int = 0
    #: the controller and the NAT box, by identity
    machines: list[str] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        parts = [f"{len(self.hosts)} host(s)", f"{self.vms} VM(s)"]
        parts += [MACHINE_TITLES[m] for m in self.machines]
        text = f"{', '.join(parts[:-1])} and {parts[-1]} recorded"
        if self.failures:
            text += "; failed: " + ", ".join(f"{h} ({why})" for h, why in self.failures.items())
        return text


# --------------------------------------------------------------------------- files


def rrd_dir(settings: Settings) -> Path:
    return settings.home / settings.paths.vm_rrds_dir.strip("/")


def host_identity(address: str) -> str:
    """The seed's name for a host's file (its address with ``_`` for ``.``) behind a
    prefix no VM identity or machine name has: a host at address ``nat`` or
    ``controller`` shared the NAT box's or the controller's file."""
    return C.HOST_RRD_PREFIX + address.replace(".", "_").replace(":", "_")


def get_rrd_file(settings: Settings, identity: str) -> Path:
    """Path of the RRD file of a VM identity or host identity (it may not exist yet)."""
    return _rrd_file_in(rrd_dir(settings), identity)


def _rrd_file_in(directory: Path, identity: str) -> Path:
    """:func:`get_rrd_file` with the directory worked out once (a host's VMs)."""
    check_identity(identity, "an RRD identity", _IDENTITY_MAX)
    return directory / f"{identity}.rrd"


def create_rrd(path: Path, start: int) -> None:
    """A new, empty RRD file whose first row may follow ``start``."""
    definitions = [f"DS:{name}:{kind}:{C.RRD_HEARTBEAT_S}:0:U" for name, kind in SOURCES]
    archives = [
        f"RRA:{cf}:0.5:{steps}:{rows}" for cf in ("AVERAGE", "MAX") for steps, rows in ARCHIVES
    ]
    with replaced_atomically(path, PRIVATE_FILE_MODE) as private:
        rrdtool.create(
            str(private), "--start", str(start), "--step", str(C.RRD_STEP_S),
            *definitions, *archives,
        )  # fmt: skip


#: what a file was last fed, by identity (see :func:`record_latest`)
Latest = dict[str, RrdSample]


def update_rrd_file(path: Path, sample: RrdSample, latest: Latest | None = None) -> bool:
    """Add the sample, creating the file first; False if the file already has a row at or
    after this time (two runs in one second: the first one counts). A sample written goes
    in ``latest`` too, under the file's identity."""
    return update_rrd_files(path.parent, [(path, sample)], latest) == 1


def update_rrd_files(
    directory: Path, samples: Sequence[tuple[Path, RrdSample]], latest: Latest | None = None
) -> int:
    """:func:`update_rrd_file` for many files of ``directory`` (a host's VMs) under one
    hold of its lock, which keeps a manual collection and the periodic one from tripping
    over rrdtool's own file lock: a lock and a directory check per file were over half
    of what a pass spent beside rrdtool (116 vs 45 us a file). How many were written."""
    private_dir(directory)
    written = 0
    with flocked(directory):
        for path, s in samples:
            row = f"{s.timestamp}:{s.cpu}:{s.ram}:{s.dr}:{s.dw}:{s.tx}:{s.rx}"
            try:
                rrdtool.update(str(path), row)
            except rrdtool.OperationalError as exc:
                if path.exists():
                    if _STALE_UPDATE in str(exc):
                        continue
                    raise
                create_rrd(path, start=s.timestamp - 1)
                rrdtool.update(str(path), row)
            written += 1
            if latest is not None:
                latest[path.stem] = s
    return written


def latest_dir(settings: Settings) -> Path:
    return rrd_dir(settings) / LATEST_DIR


def last_values(path: Path) -> LastValues | None:
    """The values last fed to an RRD file with its update time; None without a file."""
    try:
        info = rrdtool.info(str(path))
    except rrdtool.OperationalError:
        return None  # no history yet
    values: LastValues = [float(info["last_update"])]
    for name, _kind in SOURCES:
        raw = info.get(f"ds[{name}].last_ds")
        values.append(None if raw in (None, "U", "") else float(raw))
    return values


def record_latest(
    settings: Settings, batch: str, latest: Latest, covered: Iterable[str] = ()
) -> None:
    """Keep what one batch of the collection (a whole pass, or one host collected alone)
    fed its files in one JSON file beside them, so a metrics scrape reads a few files
    instead of every VM's RRD file (25,000 ``rrdtool info`` calls took seconds). The
    ``covered`` identities it did not feed (a host its SSH could not reach, a DOWN host's
    VMs, no NAT box) are looked up in their files now, ``null`` for no file: a scrape then
    never looks for files itself (a listing of 27,500 files per scrape)."""
    rows: dict[str, LastValues | None] = {
        identity: [getattr(s, name) for name in _LATEST_FIELDS] for identity, s in latest.items()
    }
    files = rrd_dir(settings)
    for identity in covered:
        if identity not in rows:
            rows[identity] = last_values(_rrd_file_in(files, identity))
    if not rows:
        return
    directory = private_dir(latest_dir(settings))
    # not flushed to disk: after a crash a lost or empty summary is skipped and its VMs
    # read from their RRD files; a flush per host made the pass 2,500 disk writes longer
    write_atomically(
        directory / f"{batch}.json", json.dumps(rows), PRIVATE_FILE_MODE, durable=False
    )


def read_summaries(settings: Settings) -> list[tuple[str, bytes]]:
    """The batches' summary files as they are (name, content), in name order: a scrape
    compares them with the ones it rendered last before it parses them."""
    directory = latest_dir(settings)
    try:
        names = sorted(name for name in os.listdir(directory) if name.endswith(".json"))
    except (FileNotFoundError, NotADirectoryError):
        return []
    contents = []
    for name in names:
        try:
            contents.append((name, (directory / name).read_bytes()))
        except OSError:
            log.warning("unreadable RRD summary %s: ignored", directory / name)
    return contents


def merge_summaries(summaries: Sequence[tuple[str, bytes]]) -> dict[str, LastValues | None]:
    """Every identity the summaries answer for: its last values, or None when it has no
    file; the newest values where a VM moved. A damaged summary is skipped (its
    identities are then read from their RRD files)."""
    values: dict[str, LastValues | None] = {}
    for name, content in summaries:
        try:
            rows = json.loads(content)
            if not isinstance(rows, dict) or not all(map(_is_row, rows.values())):
                raise ValueError("not a summary")
        except ValueError:
            log.warning("unreadable RRD summary %s: ignored", name)
            continue
        if not values:
            values = rows
            continue
        for identity, row in rows.items():
            old = values.get(identity)
            if old is None or (row is not None and row[0] > old[0]):
                values[identity] = row
    return values


def _is_row(row: object) -> bool:
    """A summary's entry: null, or a time and a value (or null) per source (the values'
    types are not checked one by one: that was a third of reading 25,000 rows)."""
    return row is None or (
        type(row) is list and len(row) == len(_LATEST_FIELDS) and type(row[0]) in (int, float)
    )


def forget_rrd(settings: Settings, identity: str) -> None:
    """Remove a deleted VM's history (a new VM of the same name starts afresh)."""
    path = get_rrd_file(settings, identity)
    if path.parent.is_dir():
        with flocked(path.parent):
            path.unlink(missing_ok=True)


# --------------------------------------------------------------------------- samples


def vm_sample(stats: DomainStats | None, timestamp: int) -> RrdSample:
    """A running domain's counters, or zeros for a VM that is not running."""
    if stats is None:
        return RrdSample(timestamp, 0, 0, 0, 0, 0, 0)
    cpus = max(1, stats.vcpus)
    return RrdSample(
        timestamp=timestamp,
        cpu=stats.cpu_time_ns // (cpus * _CPU_UNIT_NS),
        ram=stats.memory_bytes,
        dr=stats.disk_read_bytes,
        dw=stats.disk_write_bytes,
        tx=stats.net_tx_bytes,
        rx=stats.net_rx_bytes,
    )


def host_sample(counters: HostCounters, cpus: int, timestamp: int) -> RrdSample:
    busy_ns = counters.cpu.kernel_ns + counters.cpu.user_ns
    return RrdSample(
        timestamp=timestamp,
        cpu=busy_ns // (max(1, cpus) * _CPU_UNIT_NS),
        ram=counters.ram_used_kb * 1024,
        dr=counters.disk.sectors_read * SECTOR_BYTES,
        dw=counters.disk.sectors_written * SECTOR_BYTES,
        tx=counters.net_tx_bytes,
        rx=counters.net_rx_bytes,
    )


# --------------------------------------------------------------------------- the seed's API


def update_vm_rrd(
    settings: Settings,
    vm_identity: str,
    stats: DomainStats | None,
    timestamp: int,
    latest: Latest | None = None,
) -> bool:
    """Record one VM: ``stats`` of its running domain, None when it is not running."""
    path = get_rrd_file(settings, vm_identity)
    return update_rrd_file(path, vm_sample(stats, timestamp), latest)


def update_host_rrd(
    settings: Settings, host: Host, timestamp: int, latest: Latest | None = None
) -> bool:
    """Record the host's own CPU, memory, disk and network counters (CPU time is shared
    by the CPUs libvirt counts, not by the capacity entered for placement)."""
    cpus = hypervisor_for(host.libvirt_uri).node_info().cpus
    sample = host_sample(sample_host_counters(host, settings), cpus, timestamp)
    return update_rrd_file(get_rrd_file(settings, host_identity(host.address)), sample, latest)


def update_machine_rrd(
    settings: Settings,
    identity: str,
    target: RemoteTarget | None,
    timestamp: int,
    latest: Latest,
) -> bool:
    """Record the controller (``target`` None: this machine) or the NAT box over SSH
    (upstream's rrd_task), from /proc like a host without libvirt; what it fed goes in
    ``latest`` (the pass sums it up)."""
    cpus = (os.cpu_count() or 1) if target is None else cpu_count(target)
    sample = host_sample(sample_counters(target), cpus, timestamp)
    return update_rrd_file(get_rrd_file(settings, identity), sample, latest)


def update_rrd(engine: Engine, settings: Settings, host_id: int) -> int:
    """One file per VM Baadal places on the host (its domains read in one bulk libvirt
    call), then the host's own file (over SSH); returns how many VM files were written.
    When only the host's own counters fail, the VMs are recorded all the same and
    :class:`PartialCollection` says how many. The host's summary is ``host-<id>``."""
    with session_scope(engine) as session:
        host = session.get(Host, host_id)
        if host is None:
            raise NotFoundError(f"no host with id {host_id}")
        identities = list(
            session.scalars(
                select(VM.vm_identity).where(VM.host_id == host_id, VM.status.in_(_INSTALLED))
            )
        )
        session.expunge(host)
    latest: Latest = {}
    try:
        return _collect_host(settings, host, identities, latest)
    finally:
        covered = [host_identity(host.address), *identities]
        record_latest(settings, f"host-{host_id}", latest, covered)


def _collect_host(settings: Settings, host: Host, identities: list[str], latest: Latest) -> int:
    """:func:`update_rrd` of a host already read (its row detached), feeding ``latest``."""
    timestamp = int(time.time())
    running = hypervisor_for(host.libvirt_uri).running_stats()
    directory = rrd_dir(settings)
    samples = [
        (_rrd_file_in(directory, identity), vm_sample(running.get(identity), timestamp))
        for identity in identities
    ]
    written = update_rrd_files(directory, samples, latest)
    try:
        update_host_rrd(settings, host, timestamp, latest)
    except Exception as exc:
        raise PartialCollection(written, exc) from exc
    return written


def _cloud_hosts(engine: Engine) -> tuple[list[tuple[Host, list[str]]], list[str]]:
    """Every UP host (detached) with the identities of its installed VMs, and the
    identities of the other hosts and of their installed VMs (not collected, but
    summed up from their files): two queries for the whole cloud, not two per host."""
    with session_scope(engine) as session:
        hosts = session.scalars(select(Host).order_by(Host.host_name)).all()
        identities: dict[int, list[str]] = {h.id: [] for h in hosts}
        rows = session.execute(
            select(VM.host_id, VM.vm_identity)
            .where(VM.host_id.is_not(None), VM.status.in_(_INSTALLED))
            .order_by(VM.id)
        )
        for host_id, identity in rows:
            identities[host_id].append(identity)
        session.expunge_all()
    up = [(h, identities[h.id]) for h in hosts if h.status == C.HostStatus.UP]
    others = [
        identity
        for h in hosts
        if h.status != C.HostStatus.UP
        for identity in (host_identity(h.address), *identities[h.id])
    ]
    return up, others


def _forget_superseded_summaries(settings: Settings, host_ids: list[int]) -> None:
    """Remove the summaries the pass's summary supersedes (of a collection of one host;
    the machines' own, which older versions wrote): a scrape reads every summary file."""
    directory = latest_dir(settings)
    try:
        present = set(os.listdir(directory))
    except FileNotFoundError:  # nothing was fed: no summaries at all
        return
    for name in [*(f"host-{i}.json" for i in host_ids), *(f"{m}.json" for m in MACHINE_TITLES)]:
        if name in present:
            (directory / name).unlink(missing_ok=True)


def update_all_rrds(engine: Engine, settings: Settings) -> CollectionReport:
    """The periodic collection: every UP host with its VMs, the controller and the NAT box
    (when Baadal programs one), in parallel; whatever fails is logged and named in the
    report, the others are recorded all the same. What every file was fed, or last holds
    (a host or machine that failed, a host not UP and its VMs), is summed up in one file
    (``hosts``), written once at the end: a file per host cost a temporary file and a
    rename each, and a scrape an open each."""
    with paused_gc():  # 25,000 samples and paths, no cycles (see baadal.gcpause)
        return _update_all_rrds(engine, settings)


def _update_all_rrds(engine: Engine, settings: Settings) -> CollectionReport:
    hosts, others = _cloud_hosts(engine)
    timestamp = int(time.time())
    report = CollectionReport()
    latest: dict[str, Latest] = {h.host_name: {} for h, _identities in hosts}
    machines_latest: dict[str, Latest] = {identity: {} for identity in MACHINE_TITLES}
    with ThreadPoolExecutor(max_workers=COLLECT_THREADS) as pool:
        futures = {
            h.host_name: pool.submit(_collect_host, settings, h, ids, latest[h.host_name])
            for h, ids in hosts
        }
        machines = {CONTROLLER_IDENTITY: None}
        try:
            nat_box = nat_box_target(settings)
        except BaadalError as exc:
            report.failures[NAT_IDENTITY] = user_message(exc)
        else:
            if nat_box is not None:
                machines[NAT_IDENTITY] = nat_box
        machine_futures = {
            identity: pool.submit(update_machine_rrd, settings, identity, target, timestamp,
                                  machines_latest[identity])
            for identity, target in machines.items()
        }  # fmt: skip
    fed = {
        identity: s
        for batch in [*latest.values(), *machines_latest.values()]
        for identity, s in batch.items()
    }
    covered = [
        *(identity for h, ids in hosts for identity in (host_identity(h.address), *ids)),
        *others,
        *MACHINE_TITLES,
    ]
    try:
        record_latest(settings, HOSTS_BATCH, fed, covered)
        _forget_superseded_summaries(settings, [h.id for h, _identities in hosts])
    except (OSError, BaadalError) as exc:  # a cache: scrapes read the RRD files instead
        log.warning("RRD collection summary not written: %s", user_message(exc))
    for name, future in [*futures.items(), *machine_futures.items()]:
        try:
            written = future.result()
        except Exception as exc:  # one machine's failure must not stop the others
            cause = exc.__cause__ if isinstance(exc, PartialCollection) else exc
            if not isinstance(cause, BaadalError):
                log.error("RRD collection on %s failed", name, exc_info=cause)
            if isinstance(exc, PartialCollection):
                report.vms += exc.vms
            report.failures[name] = user_message(exc)
            continue
        if name in machine_futures:
            report.machines.append(name)
        else:
            report.vms += written
            report.hosts.append(name)
    log.info("RRD collection: %s", report.summary())
    return report


@handler(C.TaskType.UPDATE_RRD, periodic=("rrd",))
def collect_rrds(ctx: TaskContext) -> TaskResult:
    """The periodic 'Update RRD' handler (the seed's vm_util_rrd and rrd_task): a partial
    success when some machines could not be read, failed when none could."""
    report = update_all_rrds(ctx.engine, ctx.settings)
    if not report.failures:
        return TaskResult.success(report.summary())
    if report.hosts or report.machines:
        return TaskResult(C.TaskStatus.PARTIAL_SUCCESS, report.summary())
    return TaskResult.failed(C.TASK_FAILED_PREFIX + report.summary())


def fetch_rrd_data(settings: Settings, identity: str, period: str = "day") -> RrdAverages:
    """Averages of each source over the last ``period`` (a C.GRAPH_PERIODS name)."""
    seconds = graph_period_seconds(period)
    path = get_rrd_file(settings, identity)
    if not path.exists():
        raise NotFoundError(f"no monitoring data for {identity!r} yet")
    (_start, _end, _step), names, rows = rrdtool.fetch(
        str(path), "AVERAGE", "--start", f"-{seconds}", "--end", "now"
    )
    averages: dict[str, float | None] = {}
    for index, name in enumerate(names):
        known = [row[index] for row in rows if row[index] is not None and math.isfinite(row[index])]
        averages[name] = round(sum(known) / len(known), 2) if known else None
    return RrdAverages(**{name: averages.get(name) for name, _ in SOURCES})


def fetch_rrd_peaks(settings: Settings, identity: str, start: int, end: int) -> RrdPeaks:
    """The maxima between ``start`` and ``end`` (Unix times): what the idle check asks,
    "did this VM ever reach the thresholds", so peaks, not averages."""
    path = get_rrd_file(settings, identity)
    if not path.exists():
        return RrdPeaks(None, None, None, 0.0)
    try:
        _window, names, rows = rrdtool.fetch(
            str(path), "MAX", "--start", str(start), "--end", str(end)
        )
    except rrdtool.OperationalError as exc:  # a damaged file: one VM's problem
        raise BaadalError(f"cannot read {path.name}: {exc}") from None
    peaks: dict[str, float | None] = {}
    for name in ("cpu", "rx", "tx"):
        index = names.index(name)
        known = [row[index] for row in rows if row[index] is not None and math.isfinite(row[index])]
        peaks[name] = max(known) if known else None
    cpu = names.index("cpu")
    with_data = sum(1 for row in rows if row[cpu] is not None and math.isfinite(row[cpu]))
    return RrdPeaks(**peaks, known=with_data / len(rows) if rows else 0.0)


def graph_period_seconds(period: str) -> int:
    try:
        return C.GRAPH_PERIODS[period]
    except KeyError:
        raise ValidationError(
            f"unknown period {period!r}; choose one of {', '.join(C.GRAPH_PERIODS)}"
        ) from None
