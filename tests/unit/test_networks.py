"""Security domains: a domain is a VLAN plus its pool, made all or nothing; bad input is a
clear error and changes nothing; a domain in use cannot be removed."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, func, select
from typer.testing import CliRunner

from baadal.cli.main import app
from baadal.db.models import VM, PrivateIpPool, SecurityDomain, Vlan
from baadal.db.session import session_scope
from baadal.errors import ConflictError, NotFoundError, ValidationError
from baadal.services import lookup, networks
from baadal.services.policy import SYSTEM

pytestmark = pytest.mark.unit


def _rows(engine: Engine) -> tuple[int, int, int]:
    with session_scope(engine) as s:
        return tuple(  # type: ignore[return-value]
            s.scalar(select(func.count()).select_from(model)) or 0
            for model in (SecurityDomain, Vlan, PrivateIpPool)
        )


def _add(engine: Engine, name: str, tag: int, cidr: str, ip_from: str, ip_to: str) -> None:
    with session_scope(engine) as s:
        networks.add_security_domain(
            s, SYSTEM, name, vlan_tag=tag, cidr=cidr, ip_from=ip_from, ip_to=ip_to
        )


def test_add_list_remove(sqlite_engine: Engine) -> None:
    _add(sqlite_engine, "research", 30, "10.0.30.0/24", "10.0.30.10", "10.0.30.19")
    _add(sqlite_engine, "teaching", 40, "10.0.40.0/24", "10.0.40.10", "10.0.40.14")
    assert _rows(sqlite_engine) == (2, 2, 15)
    with session_scope(sqlite_engine) as s:
        summary = {d.name: d for d in networks.list_security_domains(s, SYSTEM).items}
        assert summary["research"].vlan_tag == 30
        assert (summary["teaching"].pool_size, summary["teaching"].pool_used) == (5, 0)
        networks.remove_security_domain(s, SYSTEM, "teaching")
    assert _rows(sqlite_engine) == (1, 1, 10)


@pytest.mark.parametrize(
    ("name", "tag", "cidr", "ip_from", "ip_to", "error", "match"),
    [
        ("dup", 32, "10.0.32.0/24", "10.0.32.10", "10.0.32.12", ConflictError, "already exists"),
        ("x", 30, "10.0.50.0/24", "10.0.50.10", "10.0.50.12", ConflictError, "VLAN id 30"),
        ("x", 50, "10.0.30.128/25", "10.0.30.130", "10.0.30.131", ConflictError, "overlaps"),
        ("x", 0, "10.0.50.0/24", "10.0.50.10", "10.0.50.12", ValidationError, "out of range"),
        ("x", 4095, "10.0.50.0/24", "10.0.50.10", "10.0.50.12", ValidationError, "out of range"),
        ("x", 50, "10.0.50.0/24", "10.0.50.10", "10.0.51.12", ValidationError, "outside VLAN"),
        ("x", 50, "10.0.50.0/24", "10.0.50.12", "10.0.50.10", ValidationError, "range"),
        ("x y", 50, "10.0.50.0/24", "10.0.50.10", "10.0.50.12", ValidationError, "may contain"),
        ("x", 50, "10.0.50.0/33", "10.0.50.10", "10.0.50.12", ValidationError, "network"),
    ],
)
def test_bad_input_changes_nothing(
    sqlite_engine: Engine,
    name: str,
    tag: int,
    cidr: str,
    ip_from: str,
    ip_to: str,
    error: type[Exception],
    match: str,
) -> None:
    _add(sqlite_engine, "research", 30, "10.0.30.0/24", "10.0.30.10", "10.0.30.19")
    _add(sqlite_engine, "dup", 31, "10.0.31.0/24", "10.0.31.10", "10.0.31.12")
    before = _rows(sqlite_engine)
    with pytest.raises(error, match=match):
        _add(sqlite_engine, name, tag, cidr, ip_from, ip_to)
    assert _rows(sqlite_engine) == before


def test_domain_in_use_is_not_removed(sqlite_engine: Engine) -> None:
    _add(sqlite_engine, "research", 30, "10.0.30.0/24", "10.0.30.10", "10.0.30.19")
    with session_scope(sqlite_engine) as s:
        domain = lookup.security_domain(s, "research")
        s.add(VM(vm_name="v", vm_identity="A_u_v", RAM=256, vCPU=1, security_domain_id=domain.id))
    before = _rows(sqlite_engine)
    with pytest.raises(ConflictError, match="has 1 VM"), session_scope(sqlite_engine) as s:
        networks.remove_security_domain(s, SYSTEM, "research")
    assert _rows(sqlite_engine) == before
    with pytest.raises(NotFoundError), session_scope(sqlite_engine) as s:
        networks.remove_security_domain(s, SYSTEM, "nope")


def test_cli_domain(
    sqlite_url: str, sqlite_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from baadal.config import get_settings

    monkeypatch.setenv("BAADAL_DATABASE__URL", sqlite_url)
    get_settings.cache_clear()
    runner = CliRunner()
    argv = ["net", "domain", "add", "lab-a", "--vlan", "60", "--cidr", "10.0.60.0/24",
            "--from", "10.0.60.10", "--to", "10.0.60.20"]  # fmt: skip
    result = runner.invoke(app, argv)
    assert result.exit_code == 0, result.output
    again = runner.invoke(app, argv)
    assert again.exit_code == 2
    assert "already exists" in again.output
    listed = runner.invoke(app, ["net", "domain", "list"])
    assert "lab-a" in listed.output and "0/11" in listed.output
    bad = runner.invoke(app, [*argv[:4], "lab-b", "--vlan", "5000", *argv[6:]])
    assert bad.exit_code == 2
    assert runner.invoke(app, ["net", "domain", "remove", "lab-a"]).exit_code == 0
    assert _rows(sqlite_engine) == (0, 0, 0)
