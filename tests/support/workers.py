"""Start real ``baadal worker`` processes against a test database."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def worker_env(db_url: str, home: Path, **settings: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "BAADAL_HOME": str(home),
            "BAADAL_DATABASE__URL": db_url,
            "BAADAL_WORKER__POLL_INTERVAL_S": "0.05",
            # this checkout's code, not whichever the venv's editable install points at
            "PYTHONPATH": os.pathsep.join((str(REPO / "src"), str(REPO))),
        }
    )
    env.update({f"BAADAL_{k.upper()}": v for k, v in settings.items()})
    return env


def start_worker(
    db_url: str,
    home: Path,
    worker_id: str,
    *,
    concurrency: int = 1,
    until_idle: bool = True,
    **settings: str,
) -> subprocess.Popen[bytes]:
    argv = [
        sys.executable,
        "-m",
        "baadal",
        "worker",
        "--handlers",
        "tests.support.handlers",
        "--worker-id",
        worker_id,
        "--concurrency",
        str(concurrency),
    ]
    if until_idle:
        argv.append("--until-idle")
    return subprocess.Popen(
        argv,
        cwd=REPO,
        env=worker_env(db_url, home, **settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def wait_ok(proc: subprocess.Popen[bytes], timeout: float = 120) -> str:
    out, _ = proc.communicate(timeout=timeout)
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text
    return text
