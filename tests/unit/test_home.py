"""The Baadal home and everything Baadal keeps in it are private (0700 / 0600), however
the home came to be: made now by any process, or an older one made 0755 with 0644 files."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from baadal.cli.main import app
from baadal.config import Settings, load_settings
from baadal.db.schema import upgrade
from baadal.db.session import get_engine, make_engine
from baadal.home import secure_home
from baadal.logs import close_logging, get_logger, setup_logging
from baadal.monitor import graphs, rrd

pytestmark = pytest.mark.unit


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask() -> object:
    """The umask of a careless shell: files 0644 and directories 0755 unless Baadal says."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def test_a_new_home_is_private_whoever_makes_it(settings: Settings, open_umask: object) -> None:
    engine = get_engine(settings)
    upgrade(engine)
    with engine.begin() as conn:  # a write, so SQLite makes its -wal and -shm files
        conn.execute(text("CREATE TABLE t (x INTEGER)"))
        conn.execute(text("INSERT INTO t VALUES (1)"))
        db = settings.home / "baadal.db"
        assert mode(db.with_name("baadal.db-wal")) == 0o600
        assert mode(db.with_name("baadal.db-shm")) == 0o600
    setup_logging(settings)
    get_logger().info("hello")
    assert mode(settings.home) == 0o700
    assert mode(db) == 0o600
    assert mode(settings.log_dir) == 0o700
    for log in settings.log_dir.iterdir():
        assert mode(log) == 0o600, log


def test_an_old_open_home_is_tightened_when_opened(
    _isolated_home: Path, open_umask: object
) -> None:
    home = _isolated_home
    made = {
        "baadal.db": b"",
        "baadal.db-wal": b"",
        "baadal.db-shm": b"",
        "baadal.toml": b"[general]\n",
        "logs/baadal.log": b"",
        "vm_rrds/vm.rrd": b"",
        "graphs/vm_cpu_day.png": b"",
        "locks/dhcp-1.lock": b"",
        "keys/secret.key": b"k",
        "snapshots/sub/s.xml": b"<x/>",
    }
    for name, data in made.items():
        path = home / name
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        path.write_bytes(data)
        path.chmod(0o644)
    (home / "bin").mkdir(mode=0o755)
    (home / "bin" / "tool").write_text("#!/bin/sh\n")
    (home / "bin" / "tool").chmod(0o755)
    (home / "tiny-guest").mkdir(mode=0o755)
    (home / "tiny-guest" / "vmlinuz").write_bytes(b"k")
    (home / "tiny-guest" / "vmlinuz").chmod(0o644)
    home.chmod(0o755)

    settings = load_settings()  # finds <home>/baadal.toml
    setup_logging(settings)

    # the hosts' QEMU boots <home>/tiny-guest (KVM probe): searchable, not listable
    assert mode(home) == 0o711
    for name in made:
        assert mode(home / name) == 0o600, name
        parent = (home / name).parent
        assert mode(parent) == (0o711 if parent == home else 0o700), name
    assert mode(home / "bin" / "tool") == 0o700  # executable for its owner only
    # the hosts' QEMU boots the tiny guest's kernel: left as its builder made it
    assert mode(home / "tiny-guest" / "vmlinuz") == 0o644


def test_a_private_home_is_not_walked_again(
    _isolated_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its tree was tightened when it became private; a new process does not walk its
    thousands of RRD files again. One left open (a walk cut short) is walked."""
    from baadal import home as home_module

    (_isolated_home / "vm_rrds").mkdir(parents=True)
    (_isolated_home / "vm_rrds" / "vm.rrd").write_bytes(b"")
    (_isolated_home / "vm_rrds" / "vm.rrd").chmod(0o644)
    _isolated_home.chmod(0o755)

    def cut_short(home: Path) -> None:
        raise OSError("cut short")

    walk = home_module._tighten_tree
    monkeypatch.setattr(home_module, "_tighten_tree", cut_short)
    with pytest.raises(OSError):
        secure_home(load_settings())
    assert mode(_isolated_home) == 0o755  # still open: the next process walks it
    monkeypatch.setattr(home_module, "_tighten_tree", walk)
    secure_home(load_settings())
    assert mode(_isolated_home / "vm_rrds" / "vm.rrd") == 0o600
    assert mode(_isolated_home) == 0o700

    home_module._secured.clear()  # a new process
    monkeypatch.setattr(home_module, "_tighten_tree", cut_short)
    assert secure_home(load_settings()) == _isolated_home


def test_a_home_holding_the_lab_may_be_searched_not_listed(_isolated_home: Path) -> None:
    """The lab's QEMU (libvirt-qemu) and dnsmasq (nobody) must reach <home>/lab."""
    (_isolated_home / "lab" / "datastore").mkdir(parents=True)
    _isolated_home.chmod(0o755)
    (_isolated_home / "lab").chmod(0o755)
    secure_home(load_settings())
    assert mode(_isolated_home) == 0o711
    assert mode(_isolated_home / "lab") == 0o755


def test_an_existing_database_and_its_companions_are_tightened(
    tmp_path: Path, open_umask: object
) -> None:
    db = tmp_path / "site.db"
    for path in (db, db.with_name("site.db-wal"), db.with_name("site.db-shm")):
        path.write_bytes(b"")
        path.chmod(0o644)
    engine = make_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    engine.dispose()
    assert {mode(p) for p in tmp_path.iterdir() if p.name.startswith("site.db")} == {0o600}


def test_rrd_files_and_graphs_are_private(settings: Settings, open_umask: object) -> None:
    now = int(time.time())
    path = rrd.get_rrd_file(settings, "vm1")
    sample = rrd.RrdSample(now, 0, 0, 0, 0, 0, 0)
    assert rrd.update_rrd_file(path, sample)
    assert (mode(path.parent), mode(path)) == (0o700, 0o600)
    picture = graphs.create_graph(settings, "vm1", "cpu", "hour")
    assert (mode(picture.parent), mode(picture)) == (0o700, 0o600)


def test_the_cli_makes_a_private_home(_isolated_home: Path, open_umask: object) -> None:
    close_logging()
    result = CliRunner().invoke(app, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert mode(_isolated_home) == 0o700
    assert mode(_isolated_home / "baadal.db") == 0o600


def test_a_log_dir_of_the_operator_s_keeps_its_mode_but_the_logs_are_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, open_umask: object
) -> None:
    shared = tmp_path / "var-log"
    shared.mkdir(mode=0o755)
    monkeypatch.setenv("BAADAL_LOG__DIR", str(shared))
    setup_logging(load_settings())
    assert mode(shared) == 0o755
    assert {mode(p) for p in shared.iterdir()} == {0o600}


def test_only_the_home_is_private_not_the_directories_above_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, open_umask: object
) -> None:
    home = tmp_path / "above" / "home"
    monkeypatch.setenv("BAADAL_HOME", str(home))
    secure_home(load_settings())
    assert (mode(home.parent), mode(home)) == (0o755, 0o700)
