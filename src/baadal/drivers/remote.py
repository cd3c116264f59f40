"""Running external commands: on other machines over SSH, and locally (the seed's helper.py).

Commands are always argument lists. Over SSH the remote side needs one command string, so
the list is quoted with :func:`shlex.join` and nothing else: ``["echo", "a b", "$HOME;id"]``
prints ``a b $HOME;id`` and never runs ``id``. The remote login shell must be POSIX-like.

One paramiko client per (address, port, user, key, host-key policy) is kept open and shared
by threads; every command gets its own exec channel on it, so the seed's "bulk" commands
cost one TCP connection and one handshake. A connection that died is replaced on next use.

Every failure -- non-zero exit, timeout, refused connection, bad key, unknown host key --
becomes :class:`~baadal.errors.RemoteCommandError` naming the host, the command and why.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import select
import shlex
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from baadal.errors import RemoteCommandError, ValidationError

if TYPE_CHECKING:
    import paramiko

    from baadal.config import Settings

log = logging.getLogger("baadal")

LOCALHOST = "localhost"
_READ_CHUNK = 32768
#: longest wait between checks of a command's state (exit status does not wake select)
_POLL_S = 0.5
_REASON_MAX = 200


class SshHost(Protocol):
    """The SSH columns of a host row, named structurally so drivers need no database."""

    @property
    def address(self) -> str: ...
    @property
    def ssh_user(self) -> str | None: ...
    @property
    def ssh_port(self) -> int | None: ...
    @property
    def ssh_key_ref(self) -> str | None: ...


@dataclass(frozen=True)
class RemoteTarget:
    """Where and how to SSH; frozen so it can key the connection cache."""

    address: str
    user: str = "root"
    port: int = 22
    #: private key file; None = the usual ~/.ssh/id_* of the user running Baadal
    key_file: str | None = None
    connect_timeout: float = 10.0
    command_timeout: float = 120.0
    #: known_hosts file; None = ~/.ssh/known_hosts
    known_hosts: str | None = None
    trust_unknown_hosts: bool = False

    @classmethod
    def for_host(cls, host: SshHost, settings: Settings) -> RemoteTarget:
        """The target for a host row; empty columns fall back to the [ssh] settings."""
        return cls.for_address(
            host.address,
            settings,
            user=host.ssh_user,
            port=host.ssh_port,
            key_file=host.ssh_key_ref,
        )

    @classmethod
    def for_address(
        cls,
        address: str,
        settings: Settings,
        *,
        user: str | None = None,
        port: int | None = None,
        key_file: str | None = None,
    ) -> RemoteTarget:
        """A target for a machine that is not a host row (NAT box, filer, DHCP server)."""
        ssh = settings.ssh
        key = key_file or ssh.key_file
        return cls(
            address=address,
            user=user or ssh.user,
            port=port or ssh.port,
            key_file=str(Path(key).expanduser()) if key else None,
            connect_timeout=ssh.connect_timeout_s,
            command_timeout=ssh.command_timeout_s,
            known_hosts=str(Path(ssh.known_hosts).expanduser()) if ssh.known_hosts else None,
            trust_unknown_hosts=ssh.trust_unknown_hosts,
        )

    @property
    def label(self) -> str:
        """How errors name the host: the address, plus the port when it is not 22."""
        if self.port == 22:
            return self.address
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class CommandResult:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


# --------------------------------------------------------------------------- errors


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            line = line.strip()
            return line if len(line) <= _REASON_MAX else line[:_REASON_MAX] + "..."
    return ""


def _exit_reason(exit_code: int, stderr: str) -> str:
    # subprocess reports death by signal N as -N
    status = f"killed by signal {-exit_code}" if exit_code < 0 else f"exit {exit_code}"
    first = _first_line(stderr)
    return f"{status}: {first}" if first else status


def _timeout_reason(timeout: float) -> str:
    return f"timed out after {float(timeout)} s"


@functools.cache
def _host_key_policies() -> tuple[type[Exception], type[Any], type[Any]]:
    """(the unknown-host-key error, the reject policy, trust on first use), made at the
    first connection: importing paramiko costs 0.1-0.2 s, which the many processes that
    never open SSH (``baadal status``, the list commands) should not pay at start."""
    import paramiko

    class UnknownHostKey(paramiko.SSHException):
        """Raised by the reject policy, so the reason can say which file to fix."""

    class RejectUnknown(paramiko.MissingHostKeyPolicy):
        def missing_host_key(
            self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
        ) -> None:
            raise UnknownHostKey(f"{hostname} {key.get_name()} {key.fingerprint}")

    class TrustOnFirstUse(paramiko.AutoAddPolicy):
        """AutoAddPolicy that says so: an accepted unknown key must leave a trace."""

        def missing_host_key(
            self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
        ) -> None:
            log.warning(
                "trusting unknown SSH host key of %s: %s %s (ssh.trust_unknown_hosts is set)",
                hostname,
                key.get_name(),
                key.fingerprint,
            )
            super().missing_host_key(client, hostname, key)

    return UnknownHostKey, RejectUnknown, TrustOnFirstUse


def _connect_reason(target: RemoteTarget, exc: BaseException) -> str:
    """A short, secret-free reason for a failed connect/handshake/auth."""
    import paramiko

    if isinstance(exc, _host_key_policies()[0]):
        where = target.known_hosts or "~/.ssh/known_hosts"
        missing = "" if target.known_hosts is None or Path(where).is_file() else " (missing)"
        return (
            f"unknown host key ({exc}): not in {where}{missing}; "
            "add it there or set ssh.trust_unknown_hosts"
        )
    if isinstance(exc, paramiko.BadHostKeyException):
        return (
            f"host key mismatch: got {exc.key.get_name()} {exc.key.fingerprint}, "
            f"known_hosts has {exc.expected_key.fingerprint} (possible man-in-the-middle)"
        )
    if isinstance(exc, paramiko.AuthenticationException):
        key = target.key_file or "default ~/.ssh keys"
        return f"authentication failed (user {target.user}, key {key}): {exc}"
    if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
        codes = {e.errno for e in exc.errors.values()}
        if codes == {errno.ECONNREFUSED}:
            return "connection refused"
        if codes == {errno.EHOSTUNREACH}:
            return "host unreachable"
        return f"cannot connect: {exc}"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return f"connection timed out after {float(target.connect_timeout)} s"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve address: {exc.strerror}"
    if isinstance(exc, EOFError):
        return "connection closed by the remote side during the SSH handshake"
    if isinstance(exc, paramiko.SSHException):
        return f"SSH error: {exc}"
    if isinstance(exc, OSError):
        return f"cannot connect: {exc.strerror or exc}"
    return f"cannot connect: {exc!r}"


# --------------------------------------------------------------------------- connections


_CacheKey = tuple[str, int, str, str | None, str | None, bool]


@dataclass
class _Slot:
    """One cached client; its lock serialises connecting, not commands."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    client: paramiko.SSHClient | None = None


_slots_lock = threading.Lock()
_slots: dict[_CacheKey, _Slot] = {}


def _forget_connections_after_fork() -> None:
    """A forked child must not touch its parent's connections: their transport threads
    did not survive the fork, and the socket is shared with the parent."""
    global _slots_lock, _slots
    _slots_lock = threading.Lock()  # may have been held by a thread that is gone
    _slots = {}


os.register_at_fork(after_in_child=_forget_connections_after_fork)


def _key(target: RemoteTarget) -> _CacheKey:
    # the host-key policy is part of the key: a connection made while trusting unknown
    # keys must not be handed to a caller that asked for strict checking
    return (
        target.address,
        target.port,
        target.user,
        target.key_file,
        target.known_hosts,
        target.trust_unknown_hosts,
    )


def _slot(target: RemoteTarget) -> _Slot:
    with _slots_lock:
        return _slots.setdefault(_key(target), _Slot())


def _new_client(target: RemoteTarget, argv: list[str]) -> paramiko.SSHClient:
    import paramiko

    _, reject_unknown, trust_on_first_use = _host_key_policies()
    client = paramiko.SSHClient()
    if target.known_hosts:
        path = Path(target.known_hosts)
        if not path.is_file() and target.trust_unknown_hosts:
            # trust on first use records the key here, so later connects are checked
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o600)
        if path.is_file():
            client.load_host_keys(str(path))
    else:
        client.load_system_host_keys()
    client.set_missing_host_key_policy(
        trust_on_first_use() if target.trust_unknown_hosts else reject_unknown()
    )
    if target.key_file is not None and not Path(target.key_file).is_file():
        raise RemoteCommandError(target.label, argv, f"key file {target.key_file} not found")
    try:
        client.connect(
            target.address,
            port=target.port,
            username=target.user,
            key_filename=target.key_file,
            timeout=target.connect_timeout,
            banner_timeout=target.connect_timeout,
            auth_timeout=target.connect_timeout,
            channel_timeout=target.connect_timeout,
            allow_agent=False,
            look_for_keys=target.key_file is None,
        )
    except (paramiko.SSHException, EOFError, OSError) as exc:
        client.close()
        raise RemoteCommandError(target.label, argv, _connect_reason(target, exc)) from None
    transport = client.get_transport()
    if transport is not None:
        # each command is a few small packets; without this Nagle adds ~40 ms per command
        with contextlib.suppress(OSError):
            transport.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    log.debug("SSH connected to %s@%s", target.user, target.label)
    return client


def _transport(target: RemoteTarget, argv: list[str]) -> paramiko.Transport:
    """The cached live transport for ``target``, connecting (again) when needed."""
    slot = _slot(target)
    with slot.lock:
        if slot.client is not None:
            transport = slot.client.get_transport()
            if transport is not None and transport.is_active():
                return transport
            log.info("SSH connection to %s@%s was lost; reconnecting", target.user, target.label)
            slot.client.close()
            slot.client = None
        slot.client = _new_client(target, argv)
        transport = slot.client.get_transport()
        assert transport is not None  # connect() succeeded
        return transport


def _drop(target: RemoteTarget, transport: paramiko.Transport) -> None:
    """Forget the cached client if it still owns ``transport`` (another thread may have
    replaced it already)."""
    slot = _slot(target)
    with slot.lock:
        if slot.client is not None and slot.client.get_transport() is transport:
            slot.client.close()
            slot.client = None


def _open_channel(target: RemoteTarget, argv: list[str]) -> paramiko.Channel:
    """A session channel; one silent reconnect if the cached connection turns out dead."""
    import paramiko

    for attempt in (1, 2):
        transport = _transport(target, argv)
        start = time.monotonic()
        try:
            return transport.open_session(timeout=target.connect_timeout)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            if not transport.is_active():
                _drop(target, transport)
                if attempt == 1:
                    continue
                raise RemoteCommandError(target.label, argv, f"connection lost: {exc}") from None
            if time.monotonic() - start >= target.connect_timeout:
                # a server that cannot open a channel in time is hung; its late answers
                # would leave orphan sessions counting against MaxSessions: start afresh
                _drop(target, transport)
                reason = f"SSH server did not answer within {float(target.connect_timeout)} s"
            else:
                # refused on a healthy connection (e.g. MaxSessions reached)
                reason = f"cannot open an SSH session: {exc}"
            raise RemoteCommandError(target.label, argv, reason) from None
    raise AssertionError("unreachable")


def close_all() -> None:
    """Close every cached connection (process shutdown, tests); commands in flight fail."""
    with _slots_lock:
        slots = list(_slots.values())
        _slots.clear()
    for slot in slots:
        with slot.lock:
            if slot.client is not None:
                slot.client.close()
                slot.client = None


# --------------------------------------------------------------------------- commands


def _check_argv(argv: list[str]) -> None:
    if not argv or not all(isinstance(a, str) for a in argv):
        raise ValidationError(f"a command is a non-empty list of strings, not {argv!r}")


def _run_on_channel(
    target: RemoteTarget,
    argv: list[str],
    chan: paramiko.Channel,
    timeout: float,
    stdin: bytes | None,
) -> CommandResult:
    import paramiko

    out, err = bytearray(), bytearray()
    pending = memoryview(stdin or b"")
    deadline = time.monotonic() + timeout
    # exec_command waits for the server's answer without a limit: a watchdog closes the
    # channel at the deadline so a hung server cannot hang the caller
    watchdog = threading.Timer(timeout, chan.close)
    watchdog.daemon = True
    try:
        watchdog.start()
        try:
            chan.exec_command(shlex.join(argv))
        finally:
            watchdog.cancel()
        if not pending:
            chan.shutdown_write()  # commands that read stdin see EOF instead of hanging
        fd = chan.fileno()  # readable when stdout/stderr data arrives or the channel closes
        while True:
            while chan.recv_ready():
                out += chan.recv(_READ_CHUNK)
            while chan.recv_stderr_ready():
                err += chan.recv_stderr(_READ_CHUNK)
            if chan.exit_status_ready():
                # exit-status follows the output on the wire: whatever came before is buffered
                while chan.recv_ready():
                    out += chan.recv(_READ_CHUNK)
                while chan.recv_stderr_ready():
                    err += chan.recv_stderr(_READ_CHUNK)
                break
            if pending and chan.send_ready():
                try:
                    sent = chan.send(bytes(pending[:_READ_CHUNK]))
                except OSError:
                    sent = len(pending)  # the command closed its stdin: stop feeding it
                pending = pending[sent:]
                if not pending:
                    chan.shutdown_write()
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RemoteCommandError(target.label, argv, _timeout_reason(timeout))
            wait = min(remaining, 0.05 if pending else _POLL_S)
            select.select([fd], [], [], wait)
        exit_code = chan.recv_exit_status()
    except (paramiko.SSHException, EOFError, OSError) as exc:
        if time.monotonic() >= deadline:
            raise RemoteCommandError(target.label, argv, _timeout_reason(timeout)) from None
        raise RemoteCommandError(target.label, argv, f"SSH error: {exc}") from None
    finally:
        chan.close()  # on timeout this abandons the command; sshd may let it run on
    if exit_code == -1:
        # no exit-status: the watchdog fired, the connection died, or the command was
        # killed by a signal (paramiko does not report exit-signal)
        if time.monotonic() >= deadline:
            reason = _timeout_reason(timeout)
        elif not chan.get_transport().is_active():
            reason = "connection lost while running"
        else:
            reason = "ended without an exit status"
        raise RemoteCommandError(target.label, argv, reason)
    return CommandResult(exit_code, out.decode(errors="replace"), err.decode(errors="replace"))


def _run(
    target: RemoteTarget,
    argv: list[str],
    timeout: float | None,
    check: bool,
    stdin: bytes | None,
) -> CommandResult:
    limit = target.command_timeout if timeout is None else timeout
    chan = _open_channel(target, argv)
    result = _run_on_channel(target, argv, chan, limit, stdin)
    if check and result.exit_code != 0:
        raise RemoteCommandError(
            target.label, argv, _exit_reason(result.exit_code, result.stderr), result.exit_code
        )
    return result


def execute_remote_cmd(
    target: RemoteTarget,
    argv: list[str],
    *,
    timeout: float | None = None,
    check: bool = True,
    stdin: bytes | None = None,
) -> CommandResult:
    """Run one command on ``target`` (the seed's helper.execute_remote_cmd).

    ``timeout`` (default ``target.command_timeout``) bounds the command, not the connect.
    With ``check`` a non-zero exit raises; a failed connection or a timeout always does.
    A timed-out command is abandoned, not killed: wrap it in ``timeout(1)`` if it must die.
    """
    _check_argv(argv)
    return _run(target, argv, timeout, check, stdin)


def execute_remote_bulk_cmd(
    target: RemoteTarget,
    commands: list[list[str]],
    *,
    timeout: float | None = None,
    stop_on_error: bool = True,
) -> list[CommandResult]:
    """Run commands one after another over one connection (the seed's bulk command,
    without an interactive shell: each command is its own exec channel).

    ``timeout`` applies to each command. With ``stop_on_error`` the first non-zero exit
    raises and later commands do not run; without it every command runs and the results
    carry the exit codes. Connection failures and timeouts raise either way.
    """
    for argv in commands:
        _check_argv(argv)
    return [_run(target, argv, timeout, stop_on_error, None) for argv in commands]


def run_local(
    argv: list[str],
    timeout: float | None = None,
    check: bool = True,
    *,
    stdin: bytes | None = None,
    cwd: str | Path | None = None,
) -> CommandResult:
    """Run a command on this machine with the same result and errors as the SSH runner,
    so callers handle external commands one way. ``timeout`` None means no limit; on
    timeout the process is killed."""
    _check_argv(argv)
    try:
        proc = subprocess.run(  # noqa: S603 - an argument list, never a shell
            argv,
            input=stdin,
            stdin=None if stdin is not None else subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            cwd=cwd,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise RemoteCommandError(LOCALHOST, argv, _timeout_reason(timeout or 0.0)) from None
    except FileNotFoundError as exc:
        what = f"command not found: {argv[0]}" if exc.filename == argv[0] else str(exc)
        raise RemoteCommandError(LOCALHOST, argv, what) from None
    except PermissionError as exc:
        what = f"not executable: {argv[0]}" if exc.filename == argv[0] else str(exc)
        raise RemoteCommandError(LOCALHOST, argv, what) from None
    except OSError as exc:
        raise RemoteCommandError(LOCALHOST, argv, f"cannot run: {exc.strerror or exc}") from None
    result = CommandResult(
        proc.returncode,
        proc.stdout.decode(errors="replace"),
        proc.stderr.decode(errors="replace"),
    )
    if check and result.exit_code != 0:
        raise RemoteCommandError(
            LOCALHOST, argv, _exit_reason(result.exit_code, result.stderr), result.exit_code
        )
    return result
