"""Whole-file replacement: readers see the old file or the new one, never a part, and a
failure leaves the old file and no private file behind."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from baadal.files import replaced_atomically, write_atomically

pytestmark = pytest.mark.unit


def test_replace_and_failure(tmp_path: Path) -> None:
    target = tmp_path / "hosts"
    write_atomically(target, "old\n")
    assert target.read_text() == "old\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    with pytest.raises(RuntimeError), replaced_atomically(target) as private:
        private.write_text("half")
        assert target.read_text() == "old\n"  # not yet
        raise RuntimeError("the writer died")
    assert target.read_text() == "old\n"
    write_atomically(target, b"new\n", mode=0o600)
    assert target.read_bytes() == b"new\n" and stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["hosts"]
