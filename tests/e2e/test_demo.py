"""The README's main job: ``baadal demo`` builds the lab, creates the demo VM through the
task engine and shows it answering ping on its DHCP address; run again, it keeps all;
after ``lab down`` it builds everything again."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from baadal.cli.main import app
from tests.e2e.conftest import wait_ping

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_demo_twice(lab_home: Path) -> None:
    runner = CliRunner()
    t0 = time.monotonic()
    first = runner.invoke(app, ["demo"])
    took = time.monotonic() - t0
    assert first.exit_code == 0, first.output
    assert "VM is installed successfully" in first.output
    ip = re.search(r"address\s*│\s*(10\.99\.10\.\d+)", first.output)
    assert ip is not None, first.output
    assert "answers ping" in first.output
    assert all(name in first.output for name in ("student", "faculty", "orgadmin", "cloudadmin"))
    assert wait_ping(ip[1], 5)
    print(f"\nbaadal demo (lab up -> VM answers ping) took {took:.1f} s")

    second = runner.invoke(app, ["demo"])
    assert second.exit_code == 0, second.output
    assert "lab already up" in second.output
    assert "queued task" not in second.output  # the running demo VM is kept as it is
    assert ip[1] in second.output

    # after lab down (its datastore and the VM's disk are gone) the demo starts afresh
    down = runner.invoke(app, ["lab", "down"])
    assert down.exit_code == 0 and "VM demo (its disk was in the lab)" in down.output
    third = runner.invoke(app, ["demo"])
    assert third.exit_code == 0, third.output
    assert "VM is installed successfully" in third.output
