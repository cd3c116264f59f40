"""Provisioning time through Baadal: a 10 GiB template vs a 100 MiB one (target ratio <= 1.2).

Each install is the whole path: ``vms.request_vm`` (VM row + 'Create VM' task), then an
in-process Worker runs until idle: allocate host/IP/port, qcow2 overlay on the template,
define + start on the host. The host is a libvirt test-driver node, so what is measured is
Baadal's provisioning path, not a guest booting. Both templates are qcow2 and hold the
same amount of real (random) data, spread over their virtual size; ``--empty`` makes them
sparse and empty instead. Installs alternate between the two templates (the order flips
every round) and each VM is deleted before the next install. For contrast, one install
of the 10 GiB template with ``vm.full_copy = True``.

Two times per install: wall time from the service call until the worker is idle, and
the task's own time (its started_at to finished_at rows).

Run from the repository root: ``.venv/bin/python bench/provision.py [--n 10] [--empty]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import use_own_tree

use_own_tree()

import argparse
import logging
import os
import statistics
import subprocess
import tempfile
import time

from sqlalchemy import Engine, select
from tests.support.cloud import fake_host_uri, make_cloud

from baadal import constants as C
from baadal.config import Settings, load_settings
from baadal.db.models import Task, Template
from baadal.db.schema import upgrade
from baadal.db.session import make_engine, session_scope
from baadal.services import vms
from baadal.services.policy import SYSTEM
from baadal.tasks.registry import load_handler_modules
from baadal.tasks.worker import Worker

MIB = 1024**2
BIG_BYTES, SMALL_BYTES = 10 * 1024 * MIB, 100 * MIB
DATA_MIB = 50


def make_template(path: Path, virtual_bytes: int, data_mib: int) -> None:
    """A qcow2 template: a raw file with ``data_mib`` 1 MiB chunks of random data spread
    evenly over ``virtual_bytes`` (the rest sparse), converted with qemu-img."""
    if data_mib == 0:
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", str(path), str(virtual_bytes)], check=True
        )
        return
    raw = path.with_suffix(".raw")
    step = virtual_bytes // data_mib
    with raw.open("wb") as f:
        f.truncate(virtual_bytes)
        for i in range(data_mib):
            f.seek(i * step)
            f.write(os.urandom(MIB))
    subprocess.run(
        ["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(path)], check=True
    )
    raw.unlink()


def allocated_mib(path: Path) -> float:
    return path.stat().st_blocks * 512 / MIB


def run_tasks(engine: Engine, settings: Settings) -> None:
    Worker(engine, settings, registry=load_handler_modules(), worker_id="bench").run(
        until_idle=True
    )


def last_task(engine: Engine) -> Task:
    with session_scope(engine) as s:
        return s.scalars(select(Task).order_by(Task.id.desc())).first()


def install(
    engine: Engine, settings: Settings, name: str, template: str
) -> tuple[int, float, float]:
    """Request + run one install; returns (vm id, wall s, task s)."""
    t0 = time.perf_counter()
    with session_scope(engine) as s:
        queued = vms.request_vm(
            s, SYSTEM, settings, vm_name=name, template=template, ram_mb=256, vcpus=1,
            security_domain="research",
        )  # fmt: skip
    run_tasks(engine, settings)
    wall = time.perf_counter() - t0
    task = last_task(engine)
    assert task.id == queued.task_id and task.status == C.TaskStatus.SUCCESS, task.message
    return queued.vm_id, wall, (task.finished_at - task.started_at).total_seconds()


def delete(engine: Engine, settings: Settings, vm_id: int) -> None:
    with session_scope(engine) as s:
        vms.operate(s, SYSTEM, vm_id, "delete")
    run_tasks(engine, settings)
    task = last_task(engine)
    assert task.status == C.TaskStatus.SUCCESS, task.message


def ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=10, help="installs per template")
    parser.add_argument("--empty", action="store_true", help="sparse, empty templates")
    args = parser.parse_args()
    data_mib = 0 if args.empty else DATA_MIB
    # tasks this fast finish before the worker's first lease renewal, which then warns
    # "lost the lease" for them (harmless here); keep the output to the numbers
    logging.getLogger("baadal").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="baadal-bench-") as tmp_name:
        tmp = Path(tmp_name)
        os.environ["BAADAL_HOME"] = str(tmp / "home")
        os.environ.pop("BAADAL_CONFIG", None)
        os.environ["BAADAL_GENERAL__ALLOW_TEST_HYPERVISORS"] = "true"  # fake:/// hosts
        settings = load_settings()
        settings.general.snapshot_requires_ping = False
        settings.worker.poll_interval_s = 0.01
        engine = make_engine(f"sqlite:///{tmp}/bench.db")
        upgrade(engine)

        templates = tmp / "datastore" / settings.paths.templates_dir
        templates.mkdir(parents=True)
        big, small = templates / "big.qcow2", templates / "small.qcow2"
        make_template(big, BIG_BYTES, data_mib)
        make_template(small, SMALL_BYTES, data_mib)
        uri = fake_host_uri(tmp, "h1", cpus=64, memory_gb=256)
        cloud = make_cloud(
            engine, settings, tmp, [uri], capacity_gb=1000, template_file=big, template_hdd_gb=10
        )
        with session_scope(engine) as s:
            s.add(
                Template(name="small", os_version="1", hdd=1, hdfile=small.name,
                         datastore_id=cloud.datastore_id)
            )  # fmt: skip
        kinds = {"big": "tiny", "small": "small"}  # make_cloud names its template "tiny"

        # warm-up: first qemu-img run, libvirt connection, SQLAlchemy caches
        for kind, tmpl in kinds.items():
            delete(engine, settings, install(engine, settings, f"warm{kind}", tmpl)[0])

        wall: dict[str, list[float]] = {k: [] for k in kinds}
        task: dict[str, list[float]] = {k: [] for k in kinds}
        for i in range(args.n):
            order = list(kinds) if i % 2 == 0 else list(reversed(kinds))
            for kind in order:
                vm_id, w, t = install(engine, settings, f"{kind}{i}", kinds[kind])
                wall[kind].append(w)
                task[kind].append(t)
                delete(engine, settings, vm_id)

        settings.vm.full_copy = True
        vm_id, full_wall, full_task = install(engine, settings, "fullcopy", "tiny")
        delete(engine, settings, vm_id)
        settings.vm.full_copy = False
        engine.dispose()

        what = (
            "sparse, empty"
            if args.empty
            else f"{DATA_MIB} x 1 MiB of random data spread over the disk"
        )
        print(f"Provisioning through Baadal (test-driver host, SQLite), {args.n} installs each")
        print(f"  templates: qcow2, {what}")
        print(
            f"    10 GiB virtual: {allocated_mib(big):.1f} MiB allocated;"
            f" 100 MiB virtual: {allocated_mib(small):.1f} MiB allocated"
        )
        for label, samples in (("wall (request -> worker idle)", wall), ("task (handler)", task)):
            b, s_ = ms(samples["big"]), ms(samples["small"])
            print(f"  {label}: median 10 GiB {b:.1f} ms, 100 MiB {s_:.1f} ms")
            print(
                f"    ratio big/small = {b / s_:.2f} (target <= 1.2) "
                f"{'OK' if b / s_ <= 1.2 else 'MISSED'}"
            )
        print(
            f"  contrast, vm.full_copy = True, 10 GiB template, once: wall "
            f"{full_wall * 1000:.1f} ms, task {full_task * 1000:.1f} ms "
            f"({full_wall / (ms(wall['big']) / 1000):.1f}x the overlay install)"
        )


if __name__ == "__main__":
    main()
