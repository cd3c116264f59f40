"""The CLI path a newcomer takes, on real libvirt: register a host, a datastore and the
tiny guest template, create a VM (it boots), stop and delete it; bad input exits 2."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest
from typer.testing import CliRunner

from baadal.config import get_settings
from baadal.db.session import dispose_engines
from baadal.lab.guest import console_line
from tests.support.libvirtd import ensure_libvirtd, qemu_workdir
from tests.support.ovs import ensure_ovs_bridge

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[CliRunner, Path]]:
    uri = ensure_libvirtd()
    ensure_ovs_bridge("baadal-br-int")
    monkeypatch.setenv("BAADAL_DATABASE__URL", f"sqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.setenv("BAADAL_VM__STOP_TIMEOUT_S", "15")
    get_settings.cache_clear()
    dispose_engines()
    with qemu_workdir() as root:
        yield CliRunner(), root
        conn = libvirt.open(uri)
        for dom in conn.listAllDomains():
            if dom.name() == "ADMIN~system~demo1":
                if dom.isActive():
                    dom.destroy()
                dom.undefine()
        conn.close()
    dispose_engines()


def run(runner: CliRunner, *args: str, code: int = 0) -> str:
    from baadal.cli.main import app

    result = runner.invoke(app, list(args))
    assert result.exit_code == code, result.output
    return result.output


def test_newcomer_path_creates_a_booting_vm(cli: tuple[CliRunner, Path]) -> None:
    runner, root = cli
    ds = root / "ds"
    ds.mkdir()
    run(runner, "db", "upgrade")
    run(runner, "datastore", "add", "ds1", "--mount-point", str(ds), "--capacity-gb", "50")
    run(runner, "host", "add", "local", "--address", "127.0.0.1", "--cpus", "2",
        "--ram-gb", "4", "--libvirt-uri", "qemu:///system", "--status", "up")  # fmt: skip
    out = run(runner, "lab", "build-guest", "--datastore", "ds1")
    assert "template tiny registered" in out
    out = run(runner, "vm", "create", "demo1", "--template", "tiny", "--no-network", "--inline")
    assert "SUCCESS: VM is installed successfully" in out
    log = ds / "vm_consoles" / "ADMIN~system~demo1.log"
    assert console_line(log, "TINY-READY", 90) is not None
    assert "RUNNING" in run(runner, "vm", "show", "demo1")
    # bad input: one line, exit 2, nothing changed
    out = run(runner, "vm", "create", "demo1", "--template", "tiny", "--no-network", code=2)
    assert "already has a VM named 'demo1'" in out
    out = run(runner, "vm", "create", "demo2", "--template", "tiny", code=2)
    assert "no default set ([network] default_security_domain)" in out
    out = run(runner, "vm", "create", "demo2", "--template", "nope", "--no-network", code=2)
    assert "no template named 'nope'" in out
    assert "demo2" not in run(runner, "vm", "list")
    assert "SUCCESS: demo1 is stopped successfully" in run(
        runner, "vm", "stop", "demo1", "--inline"
    )
    assert "SUCCESS: demo1 is deleted successfully" in run(
        runner, "vm", "delete", "demo1", "--inline"
    )
    assert "demo1" not in run(runner, "vm", "list")
    assert sorted(p.name for p in (ds / "vm_images").iterdir()) == []
