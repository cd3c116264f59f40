"""A real OpenSSH server on 127.0.0.1 for tests (root, no systemd: started by hand).

``running_sshd(workdir)`` generates a host key and a client key, writes authorized_keys,
a minimal sshd_config and a known_hosts line for ``[127.0.0.1]:<port>``, runs
``/usr/sbin/sshd -D -e`` with its log in ``workdir/sshd.log``, and stops it afterwards.
The log lets tests count connections (one ``Accepted publickey`` line per connection).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from baadal.drivers.remote import RemoteTarget

SSHD = "/usr/sbin/sshd"
HOST = "127.0.0.1"
START_TIMEOUT_S = 10.0
#: sshd refuses to start without its privilege-separation directory
PRIVSEP_DIR = Path("/run/sshd")


def free_port() -> int:
    """A TCP port nobody listens on right now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def keygen(path: Path, comment: str) -> Path:
    """An unencrypted ed25519 key pair at ``path`` / ``path.pub``."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return path


def known_hosts_line(port: int, pub_key_file: Path) -> str:
    key_type, key_b64 = pub_key_file.read_text().split()[:2]
    return f"[{HOST}]:{port} {key_type} {key_b64}\n"


@dataclass
class SshServer:
    workdir: Path
    port: int
    host_key: Path
    client_key: Path
    known_hosts: Path
    log_file: Path
    proc: subprocess.Popen[bytes] | None = None

    def target(self, **changes: object) -> RemoteTarget:
        """A RemoteTarget for this server (root, client key, strict known_hosts)."""
        base = RemoteTarget(
            address=HOST,
            user="root",
            port=self.port,
            key_file=str(self.client_key),
            connect_timeout=5.0,
            command_timeout=30.0,
            known_hosts=str(self.known_hosts),
            trust_unknown_hosts=False,
        )
        return replace(base, **changes)  # type: ignore[arg-type]

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")

    def accepted_connections(self) -> int:
        """How many clients have authenticated so far (one line per connection)."""
        return self.log().count("Accepted publickey for ")


def _write_config(server: SshServer, authorized_keys: Path) -> Path:
    config = server.workdir / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"ListenAddress {HOST}",
                f"Port {server.port}",
                f"HostKey {server.host_key}",
                f"AuthorizedKeysFile {authorized_keys}",
                f"PidFile {server.workdir / 'sshd.pid'}",
                "PermitRootLogin prohibit-password",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "UsePAM no",
                "StrictModes no",
                "UseDNS no",
                "PrintMotd no",
                "LogLevel INFO",
                "",
            ]
        )
    )
    return config


def _wait_until_listening(server: SshServer) -> None:
    assert server.proc is not None
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"sshd exited with {server.proc.returncode}:\n{server.log()}")
        with contextlib.suppress(OSError), socket.create_connection((HOST, server.port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"sshd did not listen on {HOST}:{server.port}:\n{server.log()}")


def start_sshd(workdir: Path) -> SshServer:
    """Generate keys and config in ``workdir`` and start sshd on a free port."""
    if os.geteuid() != 0:
        raise RuntimeError("the test sshd runs as root (it must read the host key, log in root)")
    if not Path(SSHD).is_file() or shutil.which("ssh-keygen") is None:
        raise RuntimeError("sshd not found: apt-get install openssh-server")
    PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
    workdir.mkdir(parents=True, exist_ok=True)
    host_key = keygen(workdir / "host_ed25519", "baadal-test-host")
    client_key = keygen(workdir / "client_ed25519", "baadal-test-client")
    authorized_keys = workdir / "authorized_keys"
    shutil.copyfile(client_key.with_suffix(".pub"), authorized_keys)
    last_error: RuntimeError | None = None
    for _ in range(3):  # another process may grab the free port before sshd binds it
        port = free_port()
        server = SshServer(
            workdir=workdir,
            port=port,
            host_key=host_key,
            client_key=client_key,
            known_hosts=workdir / "known_hosts",
            log_file=workdir / "sshd.log",
        )
        server.known_hosts.write_text(known_hosts_line(port, host_key.with_suffix(".pub")))
        config = _write_config(server, authorized_keys)
        with server.log_file.open("ab") as log:
            server.proc = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        try:
            _wait_until_listening(server)
            return server
        except RuntimeError as exc:
            stop_sshd(server)
            last_error = exc
    assert last_error is not None
    raise last_error


def stop_sshd(server: SshServer) -> None:
    """Stop the listener. Sessions still open end when their clients disconnect."""
    if server.proc is None:
        return
    if server.proc.poll() is None:
        server.proc.terminate()
        try:
            server.proc.wait(5)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait()
    server.proc = None


@contextlib.contextmanager
def running_sshd(workdir: Path) -> Iterator[SshServer]:
    server = start_sshd(workdir)
    try:
        yield server
    finally:
        stop_sshd(server)
