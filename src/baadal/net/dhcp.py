"""Address reservations on the DHCP server (the seed's create_dhcp_entry and friends).

Upstream wrote one dhcpd.conf fragment per host, concatenated them and restarted
isc-dhcp-server on every change. Here Baadal owns one whole file of reservations:

* dnsmasq: the ``--dhcp-hostsfile``, ``mac,ip,name`` lines. SIGHUP makes dnsmasq re-read
  it without a restart, so leases and clients being served are not disturbed.
* isc: ``host`` blocks in a file that dhcpd.conf includes, then the configured reload
  command (dhcpd cannot re-read its configuration, so that is normally a restart).

Every change reads the file, edits the list and writes the whole file again as a temporary
file in the same directory renamed over the old one: the server never sees half a file,
and a failed change leaves the old file as it was. Writers are serialised by a lock in
this process and across processes by ``flock``: on a lock file next to the file when it
is on this machine, and on one in Baadal's home for a remote DHCP server (the workers all
run on the controller). Should an entry still go missing, the periodic network sanity
job restores it from the database.

The database is the truth: the file holds only what Baadal put there and can always be
rebuilt from it (:func:`rebuild_dhcp_entries`, at controller start or when it is lost).
With backend "none" every function does nothing (clouds whose DHCP Baadal does not manage).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import signal
import threading
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from baadal import constants as C
from baadal.drivers.remote import RemoteTarget, execute_remote_cmd, run_local
from baadal.errors import ConfigError, ConflictError, RemoteCommandError, ValidationError
from baadal.filelock import flocked
from baadal.files import write_atomically
from baadal.home import private_dir
from baadal.net.validators import is_valid_ipv4, normalize_mac

if TYPE_CHECKING:
    from baadal.config import DhcpConf, Settings

log = logging.getLogger("baadal")

#: a DNS label that both dnsmasq (legal_hostname) and dhcpd's parser accept
_LABEL = r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}"
_NAME_RE = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_NAME_MAX = 253
_LABEL_MAX = 63
_NOT_LABEL_CHAR = re.compile(r"[^A-Za-z0-9_-]")
_ISC_LINE = re.compile(
    r"host\s+(?P<name>[^\s{]+)\s*\{\s*hardware\s+ethernet\s+(?P<mac>[0-9A-Fa-f:]+)\s*;"
    r"\s*fixed-address\s+(?P<ip>[0-9.]+)\s*;\s*\}"
)
_HEADER = "# Written by Baadal from its database: edits here are lost.\n"
_RELOAD_TIMEOUT_S = 120.0

#: serialises writers in this process (flock alone does not: it is per open file)
_lock = threading.Lock()


def _new_lock_after_fork() -> None:
    """A forked child must not inherit the lock held by a thread that did not survive."""
    global _lock
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_new_lock_after_fork)


@dataclass(frozen=True)
class DhcpEntry:
    """One reservation: the client with ``mac`` always gets ``ip`` and the name ``name``.

    The MAC is stored upper-case with colons (as the pools store it), so entries compare
    equal however the MAC was typed.
    """

    name: str
    mac: str
    ip: str

    def __post_init__(self) -> None:
        name = self.name
        if not isinstance(name, str) or len(name) > _NAME_MAX or not _NAME_RE.fullmatch(name):
            raise ValidationError(
                f"DHCP host name {name!r} must be dot-separated labels of 1-{_LABEL_MAX}"
                " letters, digits, '_' or '-', each starting with a letter or digit"
            )
        if not is_valid_ipv4(self.ip):
            raise ValidationError(f"DHCP entry {name}: {self.ip!r} is not a valid IPv4 address")
        try:
            mac = normalize_mac(self.mac)
        except ValidationError as exc:
            raise ValidationError(f"DHCP entry {name}: {exc}") from None
        object.__setattr__(self, "mac", mac)

    def __str__(self) -> str:
        return f"{self.name} ({self.mac} -> {self.ip})"


def _as_entry(item: DhcpEntry | tuple[str, str, str]) -> DhcpEntry:
    """The seed passes (host_name, mac_addr, ip_addr) tuples."""
    if isinstance(item, DhcpEntry):
        return item
    if not isinstance(item, tuple) or len(item) != 3:
        raise ValidationError(f"a DHCP entry is (name, mac, ip), not {item!r}")
    return DhcpEntry(*item)


# --------------------------------------------------------------------------- formats


def _parse_lines(text: str, parse_line: Callable[[str], DhcpEntry]) -> list[DhcpEntry]:
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            entries.append(parse_line(line))
        except ValidationError as exc:
            raise ValidationError(f"line {number}: {exc}") from None
    return entries


def render_dnsmasq_hosts(entries: Iterable[DhcpEntry]) -> str:
    """A ``--dhcp-hostsfile``: one ``mac,ip,name`` line per entry."""
    return _HEADER + "".join(f"{e.mac},{e.ip},{e.name}\n" for e in entries)


def _dnsmasq_line(line: str) -> DhcpEntry:
    fields = line.split(",")
    if len(fields) != 3:
        raise ValidationError(f"expected 'mac,ip,name', got {line!r}")
    mac, ip, name = fields
    return DhcpEntry(name, mac, ip)


def parse_dnsmasq_hosts(text: str) -> list[DhcpEntry]:
    """The entries of a file written by :func:`render_dnsmasq_hosts`."""
    return _parse_lines(text, _dnsmasq_line)


def render_isc_hosts(entries: Iterable[DhcpEntry]) -> str:
    """dhcpd.conf ``host`` declarations, one per line, for dhcpd.conf to include."""
    return _HEADER + "".join(
        f"host {e.name} {{ hardware ethernet {e.mac}; fixed-address {e.ip}; }}\n" for e in entries
    )


def _isc_line(line: str) -> DhcpEntry:
    match = _ISC_LINE.fullmatch(line)
    if match is None:
        raise ValidationError(
            f"expected 'host NAME {{ hardware ethernet MAC; fixed-address IP; }}', got {line!r}"
        )
    return DhcpEntry(match["name"], match["mac"], match["ip"])


def parse_isc_hosts(text: str) -> list[DhcpEntry]:
    """The entries of a file written by :func:`render_isc_hosts`."""
    return _parse_lines(text, _isc_line)


# --------------------------------------------------------------------------- machines


class _Machine(ABC):
    """Where the file and the server are: this machine, or the DHCP server over SSH."""

    label: str

    @abstractmethod
    def read(self, path: str) -> str | None:
        """The file's text; None when it does not exist."""

    @abstractmethod
    def write(self, path: str, text: str) -> None:
        """Replace the file atomically, world-readable (dnsmasq runs as nobody)."""

    @abstractmethod
    def run(self, argv: list[str]) -> None: ...

    @abstractmethod
    def hup(self, pid: int) -> None: ...

    @abstractmethod
    def locked(self, path: str) -> contextlib.AbstractContextManager[None]:
        """Exclusive against other processes changing ``path``."""


class _Local(_Machine):
    label = "this machine"

    def read(self, path: str) -> str | None:
        try:
            return Path(path).read_text()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None

    def write(self, path: str, text: str) -> None:
        try:
            write_atomically(Path(path), text)
        except OSError as exc:
            raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None

    def run(self, argv: list[str]) -> None:
        run_local(argv, timeout=_RELOAD_TIMEOUT_S)

    def hup(self, pid: int) -> None:
        try:
            os.kill(pid, signal.SIGHUP)
        except ProcessLookupError:
            raise ConfigError(f"dnsmasq (pid {pid}) is not running") from None
        except PermissionError:
            raise ConfigError(f"not allowed to signal dnsmasq (pid {pid})") from None

    def locked(self, path: str) -> contextlib.AbstractContextManager[None]:
        return flocked(Path(f"{path}.lock"))


class _Remote(_Machine):
    """Every step is one argument-list command over SSH; no shell strings."""

    def __init__(self, target: RemoteTarget, lock_dir: Path) -> None:
        self.target = target
        self.label = target.label
        self.lock_dir = lock_dir

    def read(self, path: str) -> str | None:
        result = execute_remote_cmd(self.target, ["cat", "--", path], check=False)
        if result.ok:
            return result.stdout
        if not execute_remote_cmd(self.target, ["test", "-e", path], check=False).ok:
            return None
        reason = result.stderr.strip() or f"exit {result.exit_code}"
        raise RemoteCommandError(self.label, ["cat", "--", path], reason, result.exit_code)

    def write(self, path: str, text: str) -> None:
        tmp = f"{path}.{uuid.uuid4().hex}.tmp"
        try:
            execute_remote_cmd(self.target, ["tee", "--", tmp], stdin=text.encode())
            execute_remote_cmd(self.target, ["chmod", "0644", "--", tmp])
            execute_remote_cmd(self.target, ["mv", "-f", "--", tmp, path])
        except RemoteCommandError:
            with contextlib.suppress(RemoteCommandError):
                execute_remote_cmd(self.target, ["rm", "-f", "--", tmp], check=False)
            raise

    def run(self, argv: list[str]) -> None:
        execute_remote_cmd(self.target, argv, timeout=_RELOAD_TIMEOUT_S)

    def hup(self, pid: int) -> None:
        execute_remote_cmd(self.target, ["kill", "-HUP", str(pid)])

    def locked(self, path: str) -> contextlib.AbstractContextManager[None]:
        """An flock here on the controller, where all workers run: one held on the DHCP
        machine would have to outlive several SSH commands."""
        key = hashlib.sha256(f"{self.label}\0{path}".encode()).hexdigest()[:16]
        private_dir(self.lock_dir)
        return flocked(self.lock_dir / f"dhcp-{key}.lock")


# --------------------------------------------------------------------------- backends


class _Backend(ABC):
    """One file format plus how its server learns that the file changed."""

    def __init__(self, conf: DhcpConf, machine: _Machine, path: str) -> None:
        self.conf = conf
        self.machine = machine
        self.path = path

    @abstractmethod
    def render(self, entries: Iterable[DhcpEntry]) -> str: ...

    @abstractmethod
    def parse(self, text: str) -> list[DhcpEntry]: ...

    @abstractmethod
    def reload(self) -> None:
        """Make the server use the file just written."""

    def load(self) -> list[DhcpEntry]:
        text = self.machine.read(self.path)
        if text is None:
            return []
        try:
            return self.parse(text)
        except ValidationError as exc:
            raise ConfigError(
                f"{self.path} on {self.machine.label} is not as Baadal wrote it ({exc});"
                " Baadal owns this file: remove it and rebuild it from the database"
            ) from None

    def save(self, entries: list[DhcpEntry]) -> None:
        self.machine.write(self.path, self.render(entries))
        self.reload()


class _Dnsmasq(_Backend):
    def render(self, entries: Iterable[DhcpEntry]) -> str:
        return render_dnsmasq_hosts(entries)

    def parse(self, text: str) -> list[DhcpEntry]:
        return parse_dnsmasq_hosts(text)

    def reload(self) -> None:
        """SIGHUP: dnsmasq re-reads its hosts file without restarting."""
        pid_file = self.conf.pid_file
        if not pid_file:
            log.debug("dhcp.pid_file is not set: wrote %s without signalling dnsmasq", self.path)
            return
        where = f"on {self.machine.label}"
        written = f"{self.path} was written and is read when dnsmasq starts"
        text = self.machine.read(pid_file)
        if text is None:
            raise ConfigError(f"dnsmasq is not running {where}: no pid file {pid_file}; {written}")
        try:
            pid = int(text.strip())
        except ValueError:
            raise ConfigError(f"{pid_file} {where} holds {text.strip()!r}, not a pid") from None
        # a stale pid may belong to another process now, which SIGHUP would likely kill
        name, state = _proc_name_state(self.machine.read(f"/proc/{pid}/status"))
        if name != "dnsmasq" or state.startswith("Z"):
            what = "gone" if not name or state.startswith("Z") else repr(name)
            raise ConfigError(
                f"dnsmasq is not running {where}: pid {pid} from {pid_file} is {what}; {written}"
            )
        self.machine.hup(pid)
        log.debug("sent SIGHUP to dnsmasq (pid %d) %s", pid, where)


def _proc_name_state(status: str | None) -> tuple[str, str]:
    """Name and state from /proc/<pid>/status ("" when the process is gone)."""
    fields = dict(line.split(":", 1) for line in (status or "").splitlines() if ":" in line)
    return fields.get("Name", "").strip(), fields.get("State", "").strip()


class _Isc(_Backend):
    def render(self, entries: Iterable[DhcpEntry]) -> str:
        return render_isc_hosts(entries)

    def parse(self, text: str) -> list[DhcpEntry]:
        return parse_isc_hosts(text)

    def reload(self) -> None:
        argv = list(self.conf.isc_reload_command)
        if not argv:
            log.debug("dhcp.isc_reload_command is empty: wrote %s only", self.path)
            return
        self.machine.run(argv)


def _backend(settings: Settings) -> _Backend | None:
    conf = settings.dhcp
    if conf.backend == C.DhcpBackend.NONE:
        return None
    machine: _Machine = (
        _Remote(RemoteTarget.for_address(conf.dhcp_ip, settings), settings.home / "locks")
        if conf.dhcp_ip
        else _Local()
    )
    if conf.backend == C.DhcpBackend.DNSMASQ:
        cls: type[_Backend] = _Dnsmasq
        key, path = "hosts_file", conf.hosts_file
    else:
        cls, key, path = _Isc, "isc_conf_file", conf.isc_conf_file
    if not path or not path.startswith("/"):
        raise ConfigError(f"dhcp.{key} must be an absolute path for backend {conf.backend}")
    return cls(conf, machine, path)


# --------------------------------------------------------------------------- edits


def _add(
    current: list[DhcpEntry],
    new: Iterable[DhcpEntry],
    on_conflict: Callable[[DhcpEntry, ConflictError], None] | None = None,
) -> list[DhcpEntry]:
    """``current`` plus ``new``; all or nothing (with ``on_conflict``: an entry that
    conflicts is handed to it and left out, the others go in).

    An entry is its MAC/IP pair: the same pair under another name is renamed, a MAC or IP
    already paired with something else, or a name already used by another pair, is a
    conflict (dhcpd refuses two host blocks with one name). Entries are found through
    indexes by pair, MAC, IP and name, so adding n entries costs O(n), not O(n^2): a
    rebuild of 25,000 VMs' reservations takes milliseconds.
    """
    result = list(current)
    by_pair: dict[tuple[str, str], int] = {}
    by_mac: dict[str, int] = {}
    by_ip: dict[str, int] = {}
    by_name: dict[str, int] = {}
    for i, e in enumerate(result):  # the first of equals counts, as a scan would find it
        by_pair.setdefault((e.mac, e.ip), i)
        by_mac.setdefault(e.mac, i)
        by_ip.setdefault(e.ip, i)
        by_name.setdefault(e.name.lower(), i)
    for entry in new:
        pair = (entry.mac, entry.ip)
        clashes = {
            i
            for i in (by_mac.get(entry.mac), by_ip.get(entry.ip), by_name.get(entry.name.lower()))
            if i is not None and (result[i].mac, result[i].ip) != pair
        }
        if clashes:
            other = result[min(clashes)]
            shared = [
                what
                for what, clash in (
                    ("MAC", other.mac == entry.mac),
                    ("IP", other.ip == entry.ip),
                    ("name", other.name.lower() == entry.name.lower()),
                )
                if clash
            ]
            error = ConflictError(
                f"cannot add DHCP entry {entry}: its {' and '.join(shared)} already"
                f" belong to {other}"
            )
            if on_conflict is None:
                raise error
            on_conflict(entry, error)
            continue
        index = by_pair.get(pair)
        if index is None:
            index = len(result)
            result.append(entry)
            by_pair[pair], by_mac[entry.mac], by_ip[entry.ip] = index, index, index
        else:
            old = result[index].name.lower()
            if by_name.get(old) == index:
                del by_name[old]
            result[index] = entry
        by_name.setdefault(entry.name.lower(), index)
    return result


def _remove(current: list[DhcpEntry], entry: DhcpEntry) -> list[DhcpEntry]:
    """``current`` without ``entry``'s MAC/IP pair (whatever name it has there)."""
    result = [e for e in current if (e.mac, e.ip) != (entry.mac, entry.ip)]
    if len(result) == len(current):
        half = [e for e in current if e.mac == entry.mac or e.ip == entry.ip]
        if half:
            log.warning("DHCP entry %s not removed: the file has %s", entry, half[0])
    return result


def _change(settings: Settings, edit: Callable[[list[DhcpEntry]], list[DhcpEntry]]) -> bool:
    """Read, edit, write back and reload; True when the file changed."""
    backend = _backend(settings)
    if backend is None:
        log.debug("dhcp.backend is none: DHCP entries are not managed by Baadal")
        return False
    with _lock, backend.machine.locked(backend.path):
        current = backend.load()
        wanted = edit(current)
        if wanted == current:
            return False
        backend.save(wanted)
    return True


def create_dhcp_bulk_entry(
    settings: Settings, entries: Iterable[DhcpEntry | tuple[str, str, str]]
) -> bool:
    """Reserve every entry, or none if one is invalid or conflicts; (name, mac, ip) tuples
    as the seed passes them are accepted. True when the file changed."""
    new = [_as_entry(item) for item in entries]
    return _change(settings, lambda current: _add(current, new))


def create_dhcp_entry(settings: Settings, name: str, mac: str, ip: str) -> bool:
    """Reserve ``ip`` for ``mac``; adding the same entry again changes nothing."""
    return create_dhcp_bulk_entry(settings, [DhcpEntry(name, mac, ip)])


def remove_dhcp_entry(settings: Settings, name: str, mac: str, ip: str) -> bool:
    """Drop the reservation of ``mac`` -> ``ip``; one that is not there is no error."""
    entry = DhcpEntry(name, mac, ip)
    return _change(settings, lambda current: _remove(current, entry))


def read_dhcp_entries(settings: Settings) -> list[DhcpEntry]:
    """What the file holds now (empty for backend none or a missing file)."""
    backend = _backend(settings)
    return [] if backend is None else backend.load()


# --------------------------------------------------------------------------- VMs


def dhcp_name(vm_identity: str) -> str:
    """A host name both servers accept for a VM: one label, other characters become '-',
    long identities are cut and given a hash so they stay distinct."""
    name = _NOT_LABEL_CHAR.sub("-", vm_identity)
    if not name[:1].isalnum():
        name = f"vm-{name}" if name else "vm"
    if len(name) > _LABEL_MAX:
        digest = hashlib.sha256(vm_identity.encode()).hexdigest()[:8]
        name = f"{name[: _LABEL_MAX - 9]}-{digest}"
    return name


def vm_entries(rows: Iterable[tuple[str, str, str]]) -> list[DhcpEntry]:
    """The reservations of VMs given as (vm_identity, mac, ip); rows the servers could not
    take are skipped with a warning so one bad row cannot keep the others from being
    served."""
    valid: list[DhcpEntry] = []
    identities: dict[int, str] = {}  # by id() of the entry: equal entries may repeat
    for identity, mac, ip in rows:
        try:
            valid.append(DhcpEntry(dhcp_name(identity), mac, ip))
        except ValidationError as exc:
            log.warning("no DHCP entry for VM %s: %s", identity, exc)
            continue
        identities[id(valid[-1])] = identity

    def skip(entry: DhcpEntry, exc: ConflictError) -> None:
        log.warning("no DHCP entry for VM %s: %s", identities[id(entry)], exc)

    return _add([], valid, skip)


def managed(settings: Settings) -> bool:
    """Whether Baadal keeps the DHCP server's reservations (backend other than none)."""
    return settings.dhcp.backend != C.DhcpBackend.NONE


def rebuild_dhcp_entries(settings: Settings, entries: list[DhcpEntry]) -> int:
    """Rewrite the whole file with ``entries`` (read from the database by
    :func:`baadal.vm.network.dhcp_entries_from_db`, in a transaction that is over by now:
    the write and the reload may take seconds) and reload the server, even when the file
    looked right (the last reload may have failed); the number of entries."""
    backend = _backend(settings)
    if backend is None:
        log.debug("dhcp.backend is none: nothing to rebuild")
        return 0
    with _lock, backend.machine.locked(backend.path):
        backend.save(entries)
    log.info("DHCP entries rebuilt from the database: %d", len(entries))
    return len(entries)
