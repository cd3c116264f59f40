"""Inventory service on SQLite: every refusal names the problem and leaves the tables (and
the datastore directories) as they were; accepted input lands in the rows as stored."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from baadal import constants as C
from baadal.config import Settings, get_settings, load_settings
from baadal.db import schema
from baadal.db.models import VM, Datastore, Host, Template, VncAccess
from baadal.db.schema import head_revision, require_schema, schema_revisions
from baadal.db.session import make_engine, session_scope
from baadal.drivers import hypervisor_for
from baadal.drivers.base import HypervisorError
from baadal.errors import ConfigError, ConflictError, NotFoundError, ValidationError
from baadal.services import inventory as inv
from baadal.services.policy import SYSTEM
from baadal.timeutil import utcnow

pytestmark = pytest.mark.unit


def _count(engine: Engine, model: type) -> int:
    with session_scope(engine) as s:
        return s.scalar(select(func.count()).select_from(model)) or 0


def _host(engine: Engine, **overrides: Any) -> Host:
    args: dict[str, Any] = {"name": "h1", "address": "10.0.0.5", "cpus": 8, "ram_gb": 32}
    args.update(overrides)
    with session_scope(engine) as s:
        return inv.add_host(s, SYSTEM, **args)


# --- hosts ---------------------------------------------------------------------------


def test_add_host_stores_what_it_was_given(sqlite_engine: Engine, tmp_path: Path) -> None:
    key = tmp_path / "id_ed25519"
    key.write_text("not really a key")
    _host(
        sqlite_engine,
        name="node-1",
        address="node-1.example.org",
        hdd_gb=500,
        ssh_user="baadal",
        ssh_port=2222,
        ssh_key_ref=str(key),
        mac_addr="52-54-00-ab-cd-ef",
        host_type="virtual",
        category="rack A",
    )
    with session_scope(sqlite_engine) as s:
        host = s.scalar(select(Host).where(Host.host_name == "node-1"))
        assert host is not None
        assert (host.address, host.CPUs, host.RAM, host.HDD) == ("node-1.example.org", 8, 32, 500)
        assert host.mac_addr == "52:54:00:AB:CD:EF"
        assert host.host_type == "Virtual"
        assert host.status == C.HostStatus.DOWN
        assert host.ssh_key_ref == str(key.resolve())
        assert host.category == "rack A"
        # the URI alone must reach the host: user, address, port and key are in it
        assert host.libvirt_uri == (
            f"qemu+ssh://baadal@node-1.example.org:2222/system?keyfile={key.resolve()}"
        )


def test_default_uri_is_plain_qemu_ssh_on_port_22(sqlite_engine: Engine) -> None:
    host = _host(sqlite_engine)
    assert host.libvirt_uri == "qemu+ssh://root@10.0.0.5/system"
    assert host.status == C.HostStatus.DOWN


@pytest.mark.parametrize(
    "uri",
    [
        "qemu:///system",
        "qemu+tcp://10.0.0.5/system",
        "qemu+tls://h.example/system",
        "test:///default",
        "qemu+ssh://root@h/system?keyfile=/etc/baadal/id&no_tty=1&sshauth=privkey,agent"
        "&known_hosts=/etc/baadal/known_hosts&mode=direct&proxy=native",
        "qemu+tls://h.example/system?pkipath=/etc/pki/baadal",
    ],
)
def test_explicit_libvirt_uris_are_kept(sqlite_engine: Engine, uri: str) -> None:
    assert _host(sqlite_engine, libvirt_uri=uri).libvirt_uri == uri


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"name": "bad name"}, "host name"),
        ({"name": ""}, "host name must be 1-30"),
        ({"name": "h" * 31}, "host name must be 1-30"),
        ({"name": "-h"}, "must start with a letter or digit"),
        ({"address": ""}, "address must not be empty"),
        ({"address": "300.1.1.1"}, "neither an IPv4 address nor a host name"),
        ({"address": "10.0.0"}, "neither an IPv4 address nor a host name"),
        ({"address": "bad_host"}, "neither an IPv4 address nor a host name"),
        ({"address": "-a.example"}, "neither an IPv4 address nor a host name"),
        ({"address": "a b"}, "neither an IPv4 address nor a host name"),
        ({"cpus": 0}, "CPUs 0 is out of range"),
        ({"cpus": -2}, "CPUs -2 is out of range"),
        ({"cpus": True}, "CPUs must be a whole number"),
        ({"ram_gb": 0}, "RAM (GB) 0 is out of range"),
        ({"hdd_gb": -1}, "HDD (GB) -1 is out of range"),
        ({"ssh_port": 0}, "SSH port 0 is out of range: must be 1..65535"),
        ({"ssh_port": 65536}, "SSH port 65536 is out of range"),
        ({"ssh_user": "ro ot"}, "SSH user 'ro ot' is not a valid user name"),
        ({"ssh_user": "a@b"}, "is not a valid user name"),
        ({"ssh_key_ref": "/nonexistent/id_rsa"}, "SSH key file must be the path of an existing"),
        ({"ssh_key_ref": "-----BEGIN OPENSSH PRIVATE KEY-----"}, "of an existing file"),
        ({"mac_addr": "zz:zz:zz:zz:zz:zz"}, "is not a valid MAC address"),
        ({"mac_addr": "01:00:5E:00:00:01"}, "multicast MAC"),
        ({"host_type": "Cloud"}, "host type 'Cloud' is not one of Physical, Virtual"),
        ({"status": 7}, "host status 7 is not one of down, up, maintenance"),
        ({"status": "sideways"}, "host status 'sideways'"),
        ({"category": "c" * 51}, "category must be at most 50"),
        ({"libvirt_uri": "http://10.0.0.5/system"}, "scheme must be one of"),
        ({"libvirt_uri": "xen:///system"}, "scheme must be one of"),
        ({"libvirt_uri": "qemu+ssh:///system"}, "qemu+ssh needs a host"),
        ({"libvirt_uri": "qemu:///etc/passwd"}, "path must be one of"),
        ({"libvirt_uri": "test:///"}, "the test driver needs a path"),
        ({"libvirt_uri": "qemu+ssh://h:99999/system"}, "is malformed"),
        ({"libvirt_uri": "qemu+ssh://h/system x"}, "must not contain spaces"),
    ],
)
def test_add_host_refuses_bad_input_and_writes_nothing(
    sqlite_engine: Engine, overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=None) as exc:
        _host(sqlite_engine, **overrides)
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)
    assert "BEGIN OPENSSH" not in str(exc.value)  # a pasted key is never echoed
    assert _count(sqlite_engine, Host) == 0


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        # libvirt's own parameters that turn its checks off or run programs
        ("qemu+ssh://root@h/system?no_verify=1", "'no_verify' is not allowed with qemu+ssh"),
        ("qemu+tls://h/system?no_verify=1", "'no_verify' is not allowed with qemu+tls"),
        ("qemu+ssh://root@h/system?known_hosts_verify=ignore", "'known_hosts_verify'"),
        ("qemu+ssh://root@h/system?command=/tmp/evil", "'command' is not allowed"),
        ("qemu+ssh://root@h/system?netcat=/tmp/evil", "'netcat' is not allowed"),
        ("qemu+ssh://root@h/system?name=test:///default", "'name' is not allowed"),
        ("qemu+tcp://h/system?keyfile=/k", "not allowed with qemu+tcp (allowed: none)"),
        ("qemu+ssh://root@h/system?keyfile=id_rsa", "keyfile='id_rsa' must be an absolute path"),
        ("qemu+ssh://root@h/system?no_tty=yes", "must be one of 0, 1"),
        ("qemu+ssh://root@h/system?sshauth=gssapi", "sshauth='gssapi' must be a comma list"),
        ("qemu+ssh://root@h/system?keyfile=/a&keyfile=/b", "'keyfile' is given twice"),
        ("qemu+ssh://root@h/system?keyfile", "malformed query"),
        ("qemu+ssh://root:pw@h/system", "must not carry a password"),
        ("qemu+ssh://root@h/system#x", "must not have a #fragment"),
        ("qemu:///embed", "path must be one of /session, /system"),
    ],
)
def test_libvirt_uri_queries_are_allow_listed(
    sqlite_engine: Engine, uri: str, message: str
) -> None:
    """``no_verify=1`` used to turn host-key checks off and ``command=`` to run a local
    program; both were stored and opened."""
    with pytest.raises(ValidationError) as exc:
        _host(sqlite_engine, libvirt_uri=uri)
    assert message in str(exc.value)
    assert _count(sqlite_engine, Host) == 0
    with pytest.raises(HypervisorError, match="refusing to open libvirt URI"):
        hypervisor_for(uri)  # a row stored before the check is not opened either


def test_test_hypervisors_only_with_the_development_setting(
    sqlite_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BAADAL_GENERAL__ALLOW_TEST_HYPERVISORS")
    get_settings.cache_clear()
    assert get_settings().general.allow_test_hypervisors is False  # the default
    for uri in ("test:///default", "fake:///h1"):
        with pytest.raises(ValidationError, match="allow_test_hypervisors"):
            _host(sqlite_engine, libvirt_uri=uri)
        with pytest.raises(HypervisorError, match="for development and tests only"):
            hypervisor_for(uri)
    assert _count(sqlite_engine, Host) == 0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"name": "h1", "address": "10.0.0.9"}, "host 'h1' already exists"),
        (
            {"name": "h2", "libvirt_uri": "qemu+ssh://root@10.0.0.5/system"},
            "host with libvirt URI 'qemu+ssh://root@10.0.0.5/system' already exists",
        ),
        (
            {"name": "h2", "address": "10.0.0.9", "mac_addr": "52:54:00:00:00:01"},
            "host with MAC '52:54:00:00:00:01' already exists",
        ),
    ],
)
def test_duplicate_hosts_conflict(
    sqlite_engine: Engine, overrides: dict[str, Any], message: str
) -> None:
    _host(sqlite_engine, mac_addr="52:54:00:00:00:01")
    with pytest.raises(ConflictError) as exc:
        _host(sqlite_engine, **overrides)
    assert str(exc.value) == message
    assert _count(sqlite_engine, Host) == 1


def test_same_address_is_allowed_on_different_hypervisors(sqlite_engine: Engine) -> None:
    """The lab runs several test-driver 'hosts' behind one address."""
    _host(sqlite_engine, name="a", address="127.0.0.1", libvirt_uri="test:///a.xml")
    _host(sqlite_engine, name="b", address="127.0.0.1", libvirt_uri="test:///b.xml")
    assert _count(sqlite_engine, Host) == 2


def test_insert_race_becomes_a_conflict_and_keeps_the_session_usable(
    sqlite_engine: Engine,
) -> None:
    _host(sqlite_engine)
    with session_scope(sqlite_engine) as s:
        twin = Host(host_name="h1", address="x", CPUs=1, libvirt_uri="test:///twin")
        with pytest.raises(ConflictError, match="host 'h1' conflicts"):
            inv._insert(s, twin, "host 'h1'")
        # the savepoint rolled back only the duplicate; the transaction goes on
        inv.add_host(s, SYSTEM, name="h2", address="10.0.0.6", cpus=1, ram_gb=1)
    with session_scope(sqlite_engine) as s:
        assert sorted(s.scalars(select(Host.host_name))) == ["h1", "h2"]


def test_get_host_by_name_then_id(sqlite_engine: Engine) -> None:
    first = _host(sqlite_engine, name="alpha")
    numbered = _host(sqlite_engine, name=str(first.id), address="10.0.0.6")
    with session_scope(sqlite_engine) as s:
        assert inv.get_host(s, SYSTEM, "alpha").id == first.id
        assert inv.get_host(s, SYSTEM, first.id).host_name == "alpha"
        # a host literally named like another's id is found by its name
        assert inv.get_host(s, SYSTEM, str(first.id)).id == numbered.id
        assert inv.get_host(s, SYSTEM, str(numbered.id)).id == numbered.id
        with pytest.raises(NotFoundError, match="no host named 'nope'"):
            inv.get_host(s, SYSTEM, "nope")
        with pytest.raises(NotFoundError):
            inv.get_host(s, SYSTEM, 999)
        assert [h.host_name for h in inv.list_hosts(s, SYSTEM).items] == ["alpha", str(first.id)]


def test_set_host_status(sqlite_engine: Engine) -> None:
    _host(sqlite_engine)
    for given, expected in [("up", 1), ("MAINTENANCE", 2), (0, 0), (C.HostStatus.UP, 1)]:
        with session_scope(sqlite_engine) as s:
            inv.set_host_status(s, SYSTEM, "h1", given)
        with session_scope(sqlite_engine) as s:
            assert inv.get_host(s, SYSTEM, "h1").status == expected
    with (
        pytest.raises(ValidationError, match="host status 'on'"),
        session_scope(sqlite_engine) as s,
    ):
        inv.set_host_status(s, SYSTEM, "h1", "on")
    with pytest.raises(NotFoundError), session_scope(sqlite_engine) as s:
        inv.set_host_status(s, SYSTEM, "h9", "up")
    with session_scope(sqlite_engine) as s:
        assert inv.get_host(s, SYSTEM, "h1").status == C.HostStatus.UP


def _vm_on(engine: Engine, host_id: int | None, name: str = "vm1") -> int:
    with session_scope(engine) as s:
        vm = VM(vm_name=name, vm_identity=f"ADMIN_u_{name}", RAM=512, vCPU=1, host_id=host_id)
        s.add(vm)
        s.flush()
        return vm.id


def _vnc(engine: Engine, vm_id: int, host_id: int, status: str) -> None:
    with session_scope(engine) as s:
        s.add(
            VncAccess(
                vm_id=vm_id,
                token="t",
                host_id=host_id,
                vnc_source_port=20001,
                status=status,
                expiry_time=utcnow() + timedelta(minutes=30),
            )
        )


def test_remove_host_refused_while_a_vm_is_on_it(sqlite_engine: Engine) -> None:
    host = _host(sqlite_engine)
    vm_id = _vm_on(sqlite_engine, host.id)
    with (
        pytest.raises(ConflictError, match="host 'h1' still has 1 VM"),
        session_scope(sqlite_engine) as s,
    ):
        inv.remove_host(s, SYSTEM, "h1")
    assert _count(sqlite_engine, Host) == 1
    with session_scope(sqlite_engine) as s:
        s.get(VM, vm_id).host_id = None  # type: ignore[union-attr]
        inv.remove_host(s, SYSTEM, "h1")
    assert _count(sqlite_engine, Host) == 0


def test_remove_host_takes_expired_console_grants_but_not_active_ones(
    sqlite_engine: Engine,
) -> None:
    host = _host(sqlite_engine)
    vm_id = _vm_on(sqlite_engine, None)
    _vnc(sqlite_engine, vm_id, host.id, "active")
    with (
        pytest.raises(ConflictError, match="active VNC console"),
        session_scope(sqlite_engine) as s,
    ):
        inv.remove_host(s, SYSTEM, host.id)
    assert (_count(sqlite_engine, Host), _count(sqlite_engine, VncAccess)) == (1, 1)
    with session_scope(sqlite_engine) as s:
        s.scalars(select(VncAccess)).one().status = "inactive"
    with session_scope(sqlite_engine) as s:
        inv.remove_host(s, SYSTEM, host.id)
    assert (_count(sqlite_engine, Host), _count(sqlite_engine, VncAccess)) == (0, 0)


def test_remove_unknown_host(sqlite_engine: Engine) -> None:
    with (
        pytest.raises(NotFoundError, match="no host named 'ghost'"),
        session_scope(sqlite_engine) as s,
    ):
        inv.remove_host(s, SYSTEM, "ghost")


# --- datastores ----------------------------------------------------------------------

STANDARD_DIRS = {
    "vm_images",
    "vm_templates",
    "vm_extra_disks",
    "vm_deleted",
    "vm_migration_data",
    "vm_rrds",
}


def _datastore(engine: Engine, settings: Settings, mount: Path, **overrides: Any) -> Datastore:
    args: dict[str, Any] = {"name": "ds1", "mount_point": str(mount), "capacity_gb": 100}
    args.update(overrides)
    with session_scope(engine) as s:
        return inv.add_datastore(s, SYSTEM, settings=settings, **args)


def test_add_datastore_lays_out_directories_idempotently(
    sqlite_engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    mount = tmp_path / "ds"
    (mount / "vm_templates").mkdir(parents=True)
    (mount / "vm_templates" / "keep.qcow2").write_text("image")
    ds = _datastore(sqlite_engine, settings, mount)
    assert {p.name for p in mount.iterdir()} == STANDARD_DIRS
    assert (mount / "vm_templates" / "keep.qcow2").read_text() == "image"
    assert (ds.ds_name, ds.capacity, ds.used) == ("ds1", 100, 0)
    assert ds.path == ds.system_mount_point == str(mount)
    assert (ds.ds_ip, ds.password_ref, ds.username) == (None, None, "")
    # laying out again (a second datastore entry is refused, the helper is not)
    inv.ensure_datastore_layout(settings, mount)
    assert {p.name for p in mount.iterdir()} == STANDARD_DIRS


def test_datastore_directories_follow_the_settings(
    sqlite_engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BAADAL_PATHS__VMS", "images")
    settings = load_settings()
    mount = tmp_path / "ds"
    mount.mkdir()
    _datastore(sqlite_engine, settings, mount)
    assert "images" in {p.name for p in mount.iterdir()}
    assert "vm_images" not in {p.name for p in mount.iterdir()}


def test_add_datastore_with_filer_details(
    sqlite_engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    secret = tmp_path / "filer.pw"
    secret.write_text("hunter2")
    mount = tmp_path / "ds"
    mount.mkdir()
    ds = _datastore(
        sqlite_engine,
        settings,
        mount,
        path="10.0.0.2:/export/ds1",
        ds_ip="10.0.0.2",
        username="filer",
        password_ref=str(secret),
    )
    with session_scope(sqlite_engine) as s:
        row = inv.get_datastore(s, SYSTEM, "ds1")
        assert (row.path, row.ds_ip, row.username) == ("10.0.0.2:/export/ds1", "10.0.0.2", "filer")
        assert row.password_ref == str(secret.resolve())
        assert "hunter2" not in repr(row.__dict__)
        assert inv.get_datastore(s, SYSTEM, ds.id).ds_name == "ds1"
        assert [d.ds_name for d in inv.list_datastores(s, SYSTEM).items] == ["ds1"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"name": "my ds"}, "datastore name 'my ds' may contain only"),
        ({"capacity_gb": 0}, "datastore capacity (GB) 0 is out of range: must be 1..9999"),
        ({"capacity_gb": 10000}, "datastore capacity (GB) 10000 is out of range"),
        ({"mount_point": "relative/ds"}, "must be an absolute path"),
        ({"mount_point": "/nonexistent/baadal-ds"}, "does not exist: mount the datastore first"),
        ({"mount_point": ""}, "mount point must not be empty"),
        ({"ds_ip": "10.0.0.256"}, "datastore IP '10.0.0.256' is not a valid IPv4"),
        ({"password_ref": "hunter2"}, "password file must be the path of an existing file"),
        ({"path": "a\nb"}, "datastore path must not contain control characters"),
    ],
)
def test_add_datastore_refuses_bad_input_and_creates_nothing(
    sqlite_engine: Engine,
    settings: Settings,
    tmp_path: Path,
    overrides: dict[str, Any],
    message: str,
) -> None:
    mount = tmp_path / "ds"
    mount.mkdir()
    with pytest.raises(ValidationError) as exc:
        _datastore(sqlite_engine, settings, mount, **overrides)
    assert message in str(exc.value)
    assert "hunter2" not in str(exc.value)  # a pasted password is never echoed
    assert _count(sqlite_engine, Datastore) == 0
    assert list(mount.iterdir()) == []


def test_mount_point_must_be_a_directory(
    sqlite_engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    file = tmp_path / "not-a-dir"
    file.write_text("")
    with pytest.raises(ValidationError, match="is not a directory"):
        _datastore(sqlite_engine, settings, file)
    assert _count(sqlite_engine, Datastore) == 0


def test_duplicate_datastores_conflict(
    sqlite_engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    _datastore(sqlite_engine, settings, first)
    with pytest.raises(ConflictError, match="datastore 'ds1' already exists"):
        _datastore(sqlite_engine, settings, second)
    with pytest.raises(ConflictError, match="datastore 'ds1' already uses mount point"):
        _datastore(sqlite_engine, settings, first, name="ds2")
    assert _count(sqlite_engine, Datastore) == 1
    assert list(second.iterdir()) == []  # refused before any directory was made


def test_one_mount_spelled_differently_is_refused_the_second_time(
    sqlite_engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    """'/a/../ds' was compared as a string: the same mount registered twice and its
    capacity counted twice (issue 12 item 10)."""
    mount = tmp_path / "ds"
    (tmp_path / "a").mkdir()
    mount.mkdir()
    (tmp_path / "link").symlink_to(mount)
    ds = _datastore(sqlite_engine, settings, Path(f"{tmp_path}/a/../ds/"))
    assert ds.system_mount_point == ds.path == str(mount)  # stored normalised
    for spelling in (
        f"{tmp_path}/a/../ds",
        f"{mount}/",
        f"{tmp_path}/./ds",
        str(tmp_path / "link"),
    ):
        with pytest.raises(ConflictError, match=f"already uses mount point {mount}$"):
            _datastore(sqlite_engine, settings, Path(spelling), name="ds2")
    with session_scope(sqlite_engine) as s:  # a row stored before normalising is seen too
        s.get(Datastore, ds.id).system_mount_point = f"{tmp_path}/a/../ds"
    with pytest.raises(ConflictError, match="already uses mount point"):
        _datastore(sqlite_engine, settings, mount, name="ds2")
    assert _count(sqlite_engine, Datastore) == 1


def test_get_unknown_datastore(sqlite_engine: Engine) -> None:
    with (
        pytest.raises(NotFoundError, match="no datastore named 'x'"),
        session_scope(sqlite_engine) as s,
    ):
        inv.get_datastore(s, SYSTEM, "x")


# --- templates -----------------------------------------------------------------------


@pytest.fixture
def store(sqlite_engine: Engine, settings: Settings, tmp_path: Path) -> Path:
    """A datastore 'ds1' with an image, a kernel and an initrd in its templates dir."""
    mount = tmp_path / "ds"
    mount.mkdir()
    _datastore(sqlite_engine, settings, mount)
    templates = mount / "vm_templates"
    (templates / "debian").mkdir()
    for name in ("base.qcow2", "debian/12.qcow2", "vmlinuz", "initrd.gz"):
        (templates / name).write_text(name)
    return templates


TemplateFactory = Callable[..., Template]


@pytest.fixture
def add_template(sqlite_engine: Engine, settings: Settings, store: Path) -> TemplateFactory:
    def _add(**overrides: Any) -> Template:
        args: dict[str, Any] = {
            "name": "tiny",
            "datastore": "ds1",
            "hdfile": "base.qcow2",
            "os_version": "12",
            "hdd_gb": 10,
        }
        args.update(overrides)
        with session_scope(sqlite_engine) as s:
            return inv.add_template(s, SYSTEM, settings=settings, **args)

    return _add


def test_add_template_stores_canonical_values(
    sqlite_engine: Engine, add_template: TemplateFactory
) -> None:
    t = add_template(
        hdfile="debian/12.qcow2",
        os="linux",
        os_name="ubuntu",
        os_type="DESKTOP",
        arch="AMD64",
        disk_type="raw",
        tag="lab",
        boot_kernel="vmlinuz",
        boot_initrd="initrd.gz",
        boot_cmdline="console=ttyS0",
    )
    with session_scope(sqlite_engine) as s:
        row = inv.get_template(s, SYSTEM, t.id)
        assert (row.os, row.os_name, row.os_type, row.arch, row.type) == (
            "Linux",
            "Ubuntu",
            "Desktop",
            "amd64",
            "RAW",
        )
        assert (row.hdfile, row.hdd, row.tag, row.is_active) == ("debian/12.qcow2", 10, "lab", True)
        assert (row.boot_kernel, row.boot_initrd, row.boot_cmdline) == (
            "vmlinuz",
            "initrd.gz",
            "console=ttyS0",
        )
        assert row.datastore.ds_name == "ds1"
        assert row.owners == []  # public


def test_add_template_defaults(add_template: TemplateFactory) -> None:
    t = add_template()
    assert (t.os, t.os_name, t.os_type, t.arch, t.type) == (
        "Linux",
        "Others",
        "Server",
        "amd64",
        "QCOW2",
    )
    assert (t.tag, t.boot_kernel, t.boot_initrd, t.boot_cmdline) == (None, None, None, None)


@pytest.mark.parametrize(
    ("overrides", "error", "message"),
    [
        ({"name": "a/b"}, ValidationError, "template name 'a/b' may contain only"),
        ({"name": "t" * 31}, ValidationError, "template name must be 1-30"),
        ({"hdfile": "missing.qcow2"}, NotFoundError, "template image 'missing.qcow2' not found"),
        ({"hdfile": "debian"}, NotFoundError, "template image 'debian' not found"),
        ({"hdfile": "../vm_images/x.qcow2"}, ValidationError, "must not contain '..'"),
        ({"hdfile": "debian/../base.qcow2"}, ValidationError, "must not contain '..'"),
        ({"hdfile": "/etc/passwd"}, ValidationError, "must be relative to the templates"),
        ({"hdfile": ""}, ValidationError, "template image must not be empty"),
        ({"hdfile": "."}, ValidationError, "template image must name a file"),
        ({"os_version": ""}, ValidationError, "OS version must not be empty"),
        ({"os_version": "v" * 51}, ValidationError, "OS version must be at most 50"),
        ({"hdd_gb": 0}, ValidationError, "template HDD (GB) 0 is out of range: must be 1..1024"),
        ({"hdd_gb": 1025}, ValidationError, "template HDD (GB) 1025 is out of range"),
        ({"os": "BSD"}, ValidationError, "OS 'BSD' is not one of Linux, Windows, Others"),
        ({"os_name": "Debian"}, ValidationError, "OS name 'Debian' is not one of Ubuntu"),
        ({"os_type": "Laptop"}, ValidationError, "OS type 'Laptop' is not one of Desktop"),
        ({"arch": "arm64"}, ValidationError, "architecture 'arm64' is not one of amd64"),
        ({"disk_type": "VMDK"}, ValidationError, "disk type 'VMDK' is not one of QCOW2, RAW, ISO"),
        ({"tag": "t" * 51}, ValidationError, "tag must be at most 50"),
        ({"datastore": "nope"}, NotFoundError, "no datastore named 'nope'"),
        ({"boot_kernel": "bzImage"}, NotFoundError, "boot kernel 'bzImage' not found"),
        (
            {"boot_kernel": "vmlinuz", "boot_initrd": "none.gz"},
            NotFoundError,
            "boot initrd 'none.gz' not found",
        ),
        ({"boot_initrd": "initrd.gz"}, ValidationError, "need a boot kernel"),
        ({"boot_cmdline": "quiet"}, ValidationError, "need a boot kernel"),
        ({"boot_kernel": "../../x"}, ValidationError, "boot kernel '../../x' must not contain"),
    ],
)
def test_add_template_refuses_bad_input_and_writes_nothing(
    sqlite_engine: Engine,
    add_template: TemplateFactory,
    overrides: dict[str, Any],
    error: type[Exception],
    message: str,
) -> None:
    with pytest.raises(error) as exc:
        add_template(**overrides)
    assert message in str(exc.value)
    assert _count(sqlite_engine, Template) == 0


def test_symlink_out_of_the_templates_dir_is_refused(
    sqlite_engine: Engine, add_template: TemplateFactory, store: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "secret.img"
    outside.write_text("x")
    (store / "sneaky.qcow2").symlink_to(outside)
    with pytest.raises(ValidationError, match="resolves outside"):
        add_template(hdfile="sneaky.qcow2")
    assert _count(sqlite_engine, Template) == 0


def test_duplicate_template_conflicts(sqlite_engine: Engine, add_template: TemplateFactory) -> None:
    add_template()
    with pytest.raises(ConflictError, match="template 'tiny' already exists"):
        add_template(hdfile="debian/12.qcow2")
    assert _count(sqlite_engine, Template) == 1


def test_deactivate_and_list_templates(
    sqlite_engine: Engine, add_template: TemplateFactory
) -> None:
    add_template(name="a")
    add_template(name="b")
    with session_scope(sqlite_engine) as s:
        assert inv.deactivate_template(s, SYSTEM, "a").is_active is False
    with session_scope(sqlite_engine) as s:
        assert [t.name for t in inv.list_templates(s, SYSTEM).items] == ["a", "b"]
        assert [t.name for t in inv.list_templates(s, SYSTEM, active_only=True).items] == ["b"]
        assert inv.get_template(s, SYSTEM, "a").is_active is False
        # deactivating again changes nothing and does not fail
        inv.deactivate_template(s, SYSTEM, "a")
        with pytest.raises(NotFoundError, match="no template named 'zz'"):
            inv.deactivate_template(s, SYSTEM, "zz")


# --- schema and settings -------------------------------------------------------------


def test_require_schema(sqlite_engine: Engine, tmp_path: Path) -> None:
    assert require_schema(sqlite_engine) == head_revision()
    empty = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    try:
        with pytest.raises(ConfigError) as exc:
            require_schema(empty)
        assert str(exc.value) == "database not initialised: run `baadal db upgrade`"
        assert schema_revisions(empty) == (None, (head_revision(),))
    finally:
        empty.dispose()


def test_the_heads_read_from_the_files_are_alembics() -> None:
    assert schema._heads_from_files() == schema.alembic_heads()
    assert len(schema.known_heads()) == 1


def test_a_migration_not_in_the_simple_form_leaves_the_heads_to_alembic(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "versions").mkdir()
    (tmp_path / "versions" / "a.py").write_text('revision: str = "a"\ndown_revision = None\n')
    (tmp_path / "versions" / "b.py").write_text('revision = "b"\ndown_revision = "a"\n')
    monkeypatch.setattr(schema, "MIGRATIONS_DIR", tmp_path)
    assert schema._heads_from_files() == ("b",)
    (tmp_path / "versions" / "c.py").write_text('revision = "c"\ndown_revision = ("a", "b")\n')
    assert schema._heads_from_files() is None


def test_require_schema_names_an_unreachable_database(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'dir.db'}")
    (tmp_path / "dir.db").mkdir()  # a directory where the file should be
    try:
        with pytest.raises(ConfigError, match="cannot open database"):
            require_schema(engine)
    finally:
        engine.dispose()


def test_settings_as_dict_hides_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BAADAL_NAT__NAT_SSH_KEY", "-----BEGIN KEY----- natsecret")
    monkeypatch.setenv("BAADAL_MAIL__LOGIN", "mailsecret")
    monkeypatch.setenv("BAADAL_MAIL__TLS", "starttls")
    monkeypatch.setenv("BAADAL_MAIL__PASSWORD_FILE", "/etc/baadal/smtp-password")
    monkeypatch.setenv("BAADAL_LDAP__LDAP_URL", "ldap://admin:ldapsecret@ldap.example.org")
    monkeypatch.setenv("BAADAL_DATABASE__URL", "postgresql+psycopg://baadal:dbsecret@db/baadal")
    monkeypatch.setenv("BAADAL_SSH__KEY_FILE", "/etc/baadal/id_ed25519")
    settings = load_settings()
    shown = inv.settings_as_dict(SYSTEM, settings)
    text = repr(shown)
    for secret in ("natsecret", "mailsecret", "ldapsecret", "dbsecret"):
        assert secret not in text
    assert shown["nat"]["nat_ssh_key"] == "***"
    assert shown["mail"]["login"] == "***"
    assert shown["ldap"]["ldap_url"] == "ldap://admin:***@ldap.example.org"
    assert shown["database"]["url"] == "postgresql+psycopg://baadal:***@db/baadal"
    # where a key lives is not a secret, and neither are flags that mention one
    assert shown["ssh"]["key_file"] == "/etc/baadal/id_ed25519"
    assert shown["auth"]["login_after_registration"] is False
    assert shown["nat"]["nat_user"] == "root"
    assert shown["mail"]["server"] == "localhost"
    assert shown["mail"]["password_file"] == "/etc/baadal/smtp-password"
    # unset secrets stay visibly unset; the raw view keeps everything
    assert (
        inv.settings_as_dict(SYSTEM, load_settings(nat={"nat_ssh_key": ""}))["nat"]["nat_ssh_key"]
        == ""
    )
    raw = inv.settings_as_dict(SYSTEM, settings, redact=False)
    assert raw["nat"]["nat_ssh_key"] == "-----BEGIN KEY----- natsecret"
    assert raw["database"]["url"].endswith("dbsecret@db/baadal")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql+psycopg://bob:se/cr#et?1@db/baadal", "postgresql+psycopg://bob:***@db/baadal"),
        ("postgresql://bob@db/baadal?password=se/cret", "postgresql://bob@db/baadal?password=***"),
        ("postgresql://bob:a?b@db:5433/baadal?sslmode=require",
         "postgresql://bob:***@db:5433/baadal?sslmode=require"),
    ],
)  # fmt: skip
def test_database_passwords_with_url_characters_are_hidden(
    monkeypatch: pytest.MonkeyPatch, url: str, shown: str
) -> None:
    """A password with '/', '#' or '?', or given as ?password=, was printed in the clear."""
    monkeypatch.setenv("BAADAL_DATABASE__URL", url)
    assert inv.settings_as_dict(SYSTEM, load_settings())["database"]["url"] == shown


@pytest.mark.parametrize(
    ("key", "secret"),
    [
        ("password", True),
        ("bind_password", True),
        ("client_secret", True),
        ("nat_ssh_key", True),
        ("api_token", True),
        ("login", True),
        ("key_file", False),
        ("password_ref", False),
        ("login_after_registration", True),  # the name matches; bool values are shown anyway
        ("ldap_dn", False),
        ("nat_user", False),
        ("keyboard", False),
    ],
)
def test_secret_setting_names(key: str, secret: bool) -> None:
    assert inv.is_secret_setting(key) is secret
