"""The lab end to end: up, a VM on a chosen lab host gets its reserved IP by DHCP and answers
ping and HTTP from the controller, delete, down leaves nothing of the lab behind."""

from __future__ import annotations

import os
import signal
import time
import urllib.request
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from typer.testing import CliRunner

from baadal import constants as C
from baadal.cli.main import app
from baadal.config import Settings, load_settings
from baadal.db.models import VM
from baadal.db.schema import upgrade
from baadal.db.session import get_engine, session_scope
from baadal.lab import daemons, layout, settings_file, ssh, state, topology
from baadal.lab.guest import console_line, parse_ready_line
from baadal.services import vms
from baadal.services.policy import SYSTEM
from baadal.vm import storage
from tests.e2e.conftest import lab_names, wait_ping
from tests.unit.test_vm_lifecycle import last_task, run_tasks

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

BOOT_TIMEOUT_S = 90
PING_TIMEOUT_S = 30


def _db(engine: Engine):
    return lambda: session_scope(engine)


def test_lab_up_vm_dhcp_ping_http_down(lab_home: Path) -> None:
    settings: Settings = load_settings()
    engine = get_engine()
    upgrade(engine)
    runner = CliRunner()

    t0 = time.monotonic()
    result = topology.up(settings, _db(engine))
    up_s = time.monotonic() - t0
    assert not result.already_up
    assert topology.healthy(topology.status(settings))

    # up again: harmless, nothing rebuilt; status exits 0
    again = runner.invoke(app, ["lab", "up"])
    assert again.exit_code == 0, again.output
    assert "already up" in again.output
    st = runner.invoke(app, ["lab", "status"])
    assert st.exit_code == 0, st.output

    # a crash (dnsmasq died): status says so, up cleans up and starts again
    pid = int((state.dns_dir(settings) / "dnsmasq.pid").read_text())
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.2)
    assert runner.invoke(app, ["lab", "status"]).exit_code == 1
    assert not topology.up(settings, _db(engine)).already_up
    assert topology.healthy(topology.status(settings))

    with session_scope(engine) as s:
        queued = vms.request_vm(
            s, SYSTEM, settings, vm_name="labvm", template="tiny", ram_mb=256, vcpus=1,
            security_domain="lab", host="lab-h1",
        )  # fmt: skip
    run_tasks(engine, settings)
    assert last_task(engine).status == C.TaskStatus.SUCCESS, last_task(engine).message
    with session_scope(engine) as s:
        vm = s.get(VM, queued.vm_id)
        assert vm.host.host_name == "lab-h1"
        ip = vm.private_ip.private_ip
        log = storage.console_log_path(settings, vm.datastore, vm.vm_identity)
    assert ip.startswith("10.99.10.")

    ready = console_line(log, "TINY-READY", BOOT_TIMEOUT_S)
    assert ready is not None, log.read_text(errors="replace")[-2000:]
    assert parse_ready_line(ready).ip == ip  # the reserved address, from dnsmasq
    assert wait_ping(ip, PING_TIMEOUT_S), f"{ip} does not answer ping from the controller"
    to_ping_s = time.monotonic() - t0
    with urllib.request.urlopen(f"http://{ip}/", timeout=10) as response:
        assert ip in response.read().decode()
    dhcp_log = (state.dns_dir(settings) / "dnsmasq.log").read_text()
    assert f"DHCPACK({layout.VLANS[0].dhcp_port}) {ip}" in dhcp_log
    print(f"\nlab up {up_s:.1f} s; lab up start -> VM pingable {to_ping_s:.1f} s")

    with session_scope(engine) as s:
        vms.operate(s, SYSTEM, queued.vm_id, "delete")
    run_tasks(engine, settings)
    assert last_task(engine).status == C.TaskStatus.SUCCESS, last_task(engine).message
    with session_scope(engine) as s:
        assert s.scalar(select(VM.id)) is None

    pids = [p for ns in (h.netns for h in layout.HOSTS) for p in daemons.netns_pids(ns)]
    for ns in (layout.DHCP_NETNS, layout.NAT_NETNS, layout.INTERNET_NETNS):
        pids += daemons.netns_pids(ns)
    assert pids
    down = runner.invoke(app, ["lab", "down"])
    assert down.exit_code == 0, down.output
    assert lab_names() == ([], [], [])
    assert [p for p in pids if daemons.running(p)] == []
    assert not state.lab_dir(settings).exists()
    known_hosts = ssh.known_hosts_file(settings)
    assert not known_hosts.exists() or ssh.KEY_COMMENT not in known_hosts.read_text()
    assert not settings_file.lab_config_file(settings).exists()
    st = runner.invoke(app, ["lab", "status"])
    assert st.exit_code == 1
