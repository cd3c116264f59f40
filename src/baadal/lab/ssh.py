"""SSH into the lab's machines exactly as into real ones.

The lab makes one client key (the host rows name it as their key) and one sshd per lab
machine with its own host key. Those host keys are written into the known_hosts file
Baadal checks (``[ssh] known_hosts``, default ``~/.ssh/known_hosts``) with the comment
``baadal-lab`` -- what an admin does with ``ssh-keyscan`` for real hosts -- and removed
again by ``lab down``. Host keys are never trusted blindly.
"""

from __future__ import annotations

import socket
from pathlib import Path

from baadal.config import Settings
from baadal.drivers.remote import run_local

SSHD = "/usr/sbin/sshd"
KEY_COMMENT = "baadal-lab"
PRIVSEP_DIR = Path("/run/sshd")


def ssh_dir(lab: Path) -> Path:
    return lab / "ssh"


def client_key(lab: Path) -> Path:
    return ssh_dir(lab) / "id_ed25519"


def authorized_keys(lab: Path) -> Path:
    return ssh_dir(lab) / "authorized_keys"


def _keygen(path: Path, comment: str) -> None:
    if not path.exists():
        run_local(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])


def prepare_client(lab: Path) -> Path:
    """The lab's client key and the authorized_keys every lab sshd reads."""
    directory = ssh_dir(lab)
    directory.mkdir(mode=0o755, parents=True, exist_ok=True)
    key = client_key(lab)
    _keygen(key, KEY_COMMENT)
    authorized_keys(lab).write_text(key.with_suffix(".pub").read_text())
    PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
    return key


def prepare_sshd(directory: Path, listen: str, pid_file: str, lab: Path) -> Path:
    """Host key and sshd_config for one lab machine; returns the config file."""
    directory.mkdir(parents=True, exist_ok=True)
    host_key = directory / "ssh_host_ed25519_key"
    _keygen(host_key, f"{KEY_COMMENT}-host")
    config = directory / "sshd_config"
    config.write_text(
        "\n".join(
            [
                "# Baadal lab machine",
                f"ListenAddress {listen}",
                "Port 22",
                f"HostKey {host_key}",
                f"AuthorizedKeysFile {authorized_keys(lab)}",
                f"PidFile {pid_file}",
                "PermitRootLogin prohibit-password",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "UsePAM no",
                # the lab's home may sit under a sticky world-writable dir such as /var/tmp
                "StrictModes no",
                "UseDNS no",
                "PrintMotd no",
                "",
            ]
        )
    )
    return config


def sshd_argv(config: Path) -> list[str]:
    return [SSHD, "-f", str(config), "-E", str(config.with_name("sshd.log"))]


def host_key_line(address: str, config: Path) -> str:
    key_type, key_b64 = (config.parent / "ssh_host_ed25519_key.pub").read_text().split()[:2]
    return f"{address} {key_type} {key_b64} {KEY_COMMENT}"


def known_hosts_file(settings: Settings) -> Path:
    return Path(settings.ssh.known_hosts or "~/.ssh/known_hosts").expanduser()


def _is_lab_line(line: str, addresses: set[str]) -> bool:
    fields = line.split()
    return len(fields) >= 4 and fields[-1] == KEY_COMMENT and fields[0] in addresses


def trust_host_keys(settings: Settings, lines: dict[str, str]) -> None:
    """Replace the known_hosts entries of the lab's addresses with ``lines``."""
    path = known_hosts_file(settings)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    kept = _without(path, set(lines))
    _replace(path, kept + list(lines.values()))


def forget_host_keys(settings: Settings, addresses: set[str]) -> bool:
    """Remove the lab's known_hosts entries; True if there were any."""
    path = known_hosts_file(settings)
    if not path.is_file():
        return False
    kept = _without(path, addresses)
    if len(kept) == len(path.read_text().splitlines()):
        return False
    _replace(path, kept)
    return True


def _without(path: Path, addresses: set[str]) -> list[str]:
    if not path.is_file():
        return []
    return [ln for ln in path.read_text().splitlines() if not _is_lab_line(ln, addresses)]


def _replace(path: Path, lines: list[str]) -> None:
    tmp = path.with_name(path.name + ".baadal-tmp")
    tmp.write_text("".join(line + "\n" for line in lines))
    tmp.chmod(0o600 if not path.exists() else path.stat().st_mode & 0o777)
    tmp.rename(path)


def sshd_answers(address: str, timeout: float = 2.0) -> tuple[bool, str]:
    """True when an SSH server greets on port 22 of ``address``."""
    try:
        with socket.create_connection((address, 22), timeout=timeout) as sock:
            sock.settimeout(timeout)
            banner = sock.recv(64).decode(errors="replace").strip()
    except OSError as exc:
        return False, f"port 22: {exc.strerror or exc}"
    if banner.startswith("SSH-"):
        return True, banner
    return False, f"no SSH greeting ({banner!r})"
