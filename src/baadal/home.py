"""The Baadal home is private: 0700, and everything Baadal keeps in it 0600/0700.

The database holds every VM's VNC password and the password hashes; the logs, RRD files,
graphs and the settings file say more about the cloud than a stranger should see. One
place makes the home, and tightens an older home (made 0755 with 0644 files) the first
time a process uses it, whichever process that is: the CLI, a worker or a server. The
home's own mode is set last, so a home that is private was tightened through and is not
walked again (its RRD files alone are one per VM).

Files Baadal creates later are made private where they are created (:func:`private_dir`,
:func:`private_file`, the ``mode`` of :mod:`baadal.files`); the modes here are not left to
the process's umask, which Baadal does not change (its children, e.g. ``qemu-img``
writing to a shared datastore, must keep theirs).
"""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

from baadal.config import Settings, config_file_path
from baadal.errors import ConfigError

HOME_MODE = 0o700
PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
#: the lab (``<home>/lab``) runs QEMU as libvirt-qemu and dnsmasq as nobody, who must
#: reach its datastore and DHCP hosts file, and QEMU boots the tiny guest's kernel and
#: initrd (``<home>/tiny-guest``) for the KVM probe: a home holding either may be searched
#: (not listed) by others; everything else in it stays private
LAB_ENTRY = "lab"
TINY_GUEST_ENTRY = "tiny-guest"
LAB_HOME_MODE = 0o711
#: home entries whose modes their own code decides (see above)
NOT_TIGHTENED = frozenset({LAB_ENTRY, TINY_GUEST_ENTRY})
#: a home with any of these bits is an older open one whose tree must be tightened
#: (LAB_HOME_MODE's search bits are Baadal's own)
_OPEN_BITS = 0o066
#: SQLite's companions of a database file
SQLITE_SUFFIXES = ("", "-wal", "-shm", "-journal")

_secured: set[Path] = set()
_lock = threading.Lock()


def _private_mode(mode: int) -> int:
    """The mode without any group or other bits (an executable file stays executable)."""
    return stat.S_IMODE(mode) & ~0o077


def _chmod(path: Path, mode: int) -> None:
    try:
        path.chmod(mode)
    except OSError as exc:
        raise ConfigError(f"cannot make {path} private: {exc.strerror or exc}") from None


def tighten(path: Path) -> None:
    """Take the group and other bits off an existing file or directory (no symlinks)."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISLNK(info.st_mode) and stat.S_IMODE(info.st_mode) & 0o077:
        _chmod(path, _private_mode(info.st_mode))


def private_dir(path: Path) -> Path:
    """``path`` as a 0700 directory, made or tightened. Missing parents are made as
    ``mkdir -p`` makes them: they are not Baadal's (the lab needs /var/tmp/x searchable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.mkdir(mode=PRIVATE_DIR_MODE, exist_ok=True)  # a file in its place: FileExistsError
    tighten(path)
    return path


def private_file(path: Path) -> Path:
    """Create ``path`` empty as 0600 if missing, else tighten it (its directory must exist)."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, PRIVATE_FILE_MODE))
    except OSError as exc:
        raise ConfigError(f"cannot create {path}: {exc.strerror or exc}") from None
    tighten(path)
    return path


def private_sqlite(database: Path) -> None:
    """The database file made 0600 before SQLite opens it: SQLite gives its -wal and -shm
    files the database file's mode, so they are private too; older ones are tightened.
    A missing directory is made private; an existing one is the operator's choice."""
    if not database.parent.is_dir():
        private_dir(database.parent)
    private_file(database)
    for suffix in SQLITE_SUFFIXES:
        tighten(database.with_name(database.name + suffix))


def open_for_lab(home: Path) -> None:
    """Let QEMU and dnsmasq search (not list) a home that holds a lab or the tiny guest."""
    _chmod(home, LAB_HOME_MODE)


def _tighten_tree(home: Path) -> None:
    for root, dirs, files in os.walk(home):
        here = Path(root)
        if here == home:
            dirs[:] = [d for d in dirs if d not in NOT_TIGHTENED]
            files = [f for f in files if f not in NOT_TIGHTENED]
        for name in (*dirs, *files):
            tighten(here / name)


def secure_home(settings: Settings) -> Path:
    """Create the home 0700, or tighten an existing open one and everything Baadal keeps
    in it; the settings file in use too, when it is ours. Once per home per process."""
    home = settings.home
    with _lock:
        if home in _secured and home.is_dir():
            return home
        existed = home.is_dir()
        was_open = existed and stat.S_IMODE(home.stat().st_mode) & _OPEN_BITS
        if not existed:
            private_dir(home)
        if was_open:
            _tighten_tree(home)
        # the home's own mode last: a private home means its tree was tightened, so a
        # later process skips the walk (25,000 VMs' RRD files took 0.5 s at every start)
        searched = any((home / entry).is_dir() for entry in NOT_TIGHTENED)
        _chmod(home, LAB_HOME_MODE if searched else HOME_MODE)
        config = config_file_path()
        if config is not None and config.stat().st_uid == os.geteuid():
            tighten(config)
        _secured.add(home)
    return home
