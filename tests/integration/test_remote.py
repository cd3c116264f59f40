"""SSH and local command runners against a real sshd on 127.0.0.1 (tests/support/sshd.py)."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from baadal.config import load_settings
from baadal.db.models import Host
from baadal.drivers import remote
from baadal.drivers.remote import (
    CommandResult,
    RemoteTarget,
    close_all,
    execute_remote_bulk_cmd,
    execute_remote_cmd,
    run_local,
)
from baadal.errors import RemoteCommandError, ValidationError
from baadal.host.health import is_host_available
from tests.support.sshd import HOST, SshServer, free_port, keygen, known_hosts_line, running_sshd

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    with running_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server
        close_all()


@pytest.fixture(autouse=True)
def _fresh_connections() -> Iterator[None]:
    """No cached connection survives a test, so connection counts are per test."""
    close_all()
    yield
    close_all()


# --------------------------------------------------------------------------- targets


def test_for_host_takes_the_row_and_falls_back_to_settings(_isolated_home: Path) -> None:
    settings = load_settings(
        ssh={
            "user": "baadal",
            "port": 2200,
            "key_file": "~/keys/id_ed25519",
            "known_hosts": "/etc/baadal/known_hosts",
            "trust_unknown_hosts": True,
            "connect_timeout_s": 3,
            "command_timeout_s": 7,
        }
    )
    row = Host(address="10.0.0.5", ssh_user="admin", ssh_port=2222, ssh_key_ref="/k/host5")
    assert RemoteTarget.for_host(row, settings) == RemoteTarget(
        address="10.0.0.5",
        user="admin",
        port=2222,
        key_file="/k/host5",
        connect_timeout=3.0,
        command_timeout=7.0,
        known_hosts="/etc/baadal/known_hosts",
        trust_unknown_hosts=True,
    )
    bare = RemoteTarget.for_host(Host(address="10.0.0.6"), settings)
    assert (bare.user, bare.port) == ("baadal", 2200)
    assert bare.key_file == str(Path("~/keys/id_ed25519").expanduser())
    assert bare.label == "10.0.0.6:2200"
    assert RemoteTarget.for_host(Host(address="h7"), load_settings()).label == "h7"
    assert RemoteTarget("fd00::7", port=2222).label == "[fd00::7]:2222"


# --------------------------------------------------------------------------- one command


def test_arguments_arrive_literally_no_shell_injection(sshd: SshServer, tmp_path: Path) -> None:
    canary = tmp_path / "injected"
    argv = ["echo", "a b", "$HOME;id", "`id`", "it's", f"$(touch {canary})", "x\ny"]
    result = execute_remote_cmd(sshd.target(), argv)
    assert result == CommandResult(0, "a b $HOME;id `id` it's $(touch " + f"{canary}) x\ny\n", "")
    assert not canary.exists()


def test_runs_as_the_target_user_with_stdin(sshd: SshServer) -> None:
    target = sshd.target()
    assert execute_remote_cmd(target, ["id", "-un"]).stdout == "root\n"
    data = bytes(range(256)) * 2000  # 512 KB: more than one SSH window
    result = execute_remote_cmd(target, ["sha256sum"], stdin=data)
    local = run_local(["sha256sum"], timeout=10, stdin=data)
    assert result.stdout == local.stdout


def test_exit_code_and_stderr_are_reported(sshd: SshServer) -> None:
    target = sshd.target()
    argv = ["ls", "/nonexistent-baadal-dir"]
    result = execute_remote_cmd(target, argv, check=False)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "/nonexistent-baadal-dir" in result.stderr
    assert not result.ok

    with pytest.raises(RemoteCommandError) as info:
        execute_remote_cmd(target, argv)
    err = info.value
    assert err.exit_code == 2
    assert err.host == f"{HOST}:{sshd.port}"
    assert err.command == argv
    assert err.reason.startswith("exit 2: ls: cannot access '/nonexistent-baadal-dir'")
    assert f"on {HOST}:{sshd.port}" in str(err)
    assert "ls /nonexistent-baadal-dir" in str(err)


def test_command_timeout_raises_promptly_and_keeps_the_connection(
    sshd: SshServer, tmp_path: Path
) -> None:
    """The call gives up at the timeout, not at the command's end: the command's last
    step (a minute on) has not happened when the call has returned. (No clock read here:
    an elapsed-time bound flakes on a loaded machine.)"""
    target = sshd.target()
    before = sshd.accepted_connections()
    done = tmp_path / "done"  # sshd runs on this machine: its files are ours to check
    argv = ["sh", "-c", f"sleep 60; touch {done}"]
    with pytest.raises(RemoteCommandError, match=r"timed out after 1\.0 s") as info:
        execute_remote_cmd(target, argv, timeout=1)
    assert not done.exists()
    assert info.value.command == argv
    assert execute_remote_cmd(target, ["echo", "still here"]).stdout == "still here\n"
    assert sshd.accepted_connections() == before + 1


def test_default_timeout_comes_from_the_target(sshd: SshServer) -> None:
    with pytest.raises(RemoteCommandError, match=r"timed out after 0\.5 s"):
        execute_remote_cmd(sshd.target(command_timeout=0.5), ["sleep", "3"])


def test_empty_command_is_refused() -> None:
    with pytest.raises(ValidationError):
        execute_remote_cmd(RemoteTarget("127.0.0.1"), [])
    with pytest.raises(ValidationError):
        run_local([], timeout=1)


# --------------------------------------------------------------------------- connecting


def test_connection_refused_is_quick_and_clear(
    sshd: SshServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refused connection is one attempt, reported as refused (not retried until the
    connect timeout, not reported as a timeout)."""
    port = free_port()
    target = sshd.target(port=port, connect_timeout=60)
    attempts = _recorded_connects(monkeypatch)
    with pytest.raises(RemoteCommandError) as info:
        execute_remote_cmd(target, ["pwd"])
    assert len(attempts) == 1
    assert info.value.reason == "connection refused"
    assert str(info.value) == f"command 'pwd' on {HOST}:{port} failed: connection refused"


def test_unknown_host_key_is_refused(sshd: SshServer, tmp_path: Path) -> None:
    before = sshd.accepted_connections()
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    for known_hosts in (empty, tmp_path / "absent"):
        with pytest.raises(RemoteCommandError, match="unknown host key") as info:
            execute_remote_cmd(sshd.target(known_hosts=str(known_hosts)), ["pwd"])
        assert str(known_hosts) in info.value.reason
        assert f"[{HOST}]:{sshd.port}" in info.value.reason
    assert sshd.accepted_connections() == before  # refused before authenticating
    assert not (tmp_path / "absent").exists()


def test_changed_host_key_is_refused(sshd: SshServer, tmp_path: Path) -> None:
    other = keygen(tmp_path / "other_host", "impostor")
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(known_hosts_line(sshd.port, other.with_suffix(".pub")))
    with pytest.raises(RemoteCommandError, match="host key mismatch"):
        execute_remote_cmd(sshd.target(known_hosts=str(known_hosts)), ["pwd"])


def test_trusting_unknown_hosts_warns_and_records_the_key(
    sshd: SshServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    known_hosts = tmp_path / "kh" / "known_hosts"
    with caplog.at_level(logging.WARNING, logger="baadal"):
        result = execute_remote_cmd(
            sshd.target(known_hosts=str(known_hosts), trust_unknown_hosts=True), ["true"]
        )
    assert result.ok
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert f"[{HOST}]:{sshd.port}" in warnings[0]
    assert "SHA256:" in warnings[0]
    # trust on first use: the key is now pinned and strict checking accepts it
    assert known_hosts.read_text().split()[:3] == sshd.known_hosts.read_text().split()[:3]
    close_all()
    assert execute_remote_cmd(sshd.target(known_hosts=str(known_hosts)), ["true"]).ok


def test_wrong_client_key_fails_authentication(sshd: SshServer, tmp_path: Path) -> None:
    stranger = keygen(tmp_path / "stranger", "stranger")
    with pytest.raises(RemoteCommandError, match="authentication failed") as info:
        execute_remote_cmd(sshd.target(key_file=str(stranger)), ["pwd"])
    assert "user root" in info.value.reason
    with pytest.raises(RemoteCommandError, match=r"key file .* not found"):
        execute_remote_cmd(sshd.target(key_file=str(tmp_path / "nokey")), ["pwd"])


# --------------------------------------------------------------------------- bulk, cache


def test_bulk_commands_share_one_connection(sshd: SshServer) -> None:
    before = sshd.accepted_connections()
    results = execute_remote_bulk_cmd(
        sshd.target(), [["echo", str(i)] for i in range(5)] + [["sh", "-c", "echo x >&2"]]
    )
    assert [r.stdout for r in results] == ["0\n", "1\n", "2\n", "3\n", "4\n", ""]
    assert results[-1].stderr == "x\n"
    execute_remote_cmd(sshd.target(), ["true"])  # the cache outlives the bulk call
    assert sshd.accepted_connections() == before + 1


def test_bulk_stop_on_error(sshd: SshServer, tmp_path: Path) -> None:
    marker = tmp_path / "ran"  # sshd runs on this machine: its files are ours to check
    commands = [["true"], ["false"], ["touch", str(marker)]]
    with pytest.raises(RemoteCommandError) as info:
        execute_remote_bulk_cmd(sshd.target(), commands)
    assert info.value.command == ["false"]
    assert info.value.exit_code == 1
    assert not marker.exists()

    results = execute_remote_bulk_cmd(sshd.target(), commands, stop_on_error=False)
    assert [r.exit_code for r in results] == [0, 1, 0]
    assert marker.exists()


def test_bulk_timeout_is_per_command(
    sshd: SshServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each command is given the whole timeout, not what the commands before it left;
    the one that outlives it is named and the commands after it do not run. Nothing here
    races the clock: the quick commands are ``true`` and the slow one never ends within
    the timeout. (It used two ``sleep 0.6`` under a 1 s timeout and an elapsed-time
    bound: on a loaded machine a 0.6 s sleep plus its channel took over 1 s.)"""
    limits: list[float] = []
    run_on_channel = remote._run_on_channel

    def recorded(*args: Any) -> CommandResult:
        limits.append(args[3])  # (target, argv, channel, timeout, stdin)
        return run_on_channel(*args)

    monkeypatch.setattr(remote, "_run_on_channel", recorded)
    marker = tmp_path / "ran"
    commands = [["true"], ["true"], ["sleep", "30"], ["touch", str(marker)]]
    with pytest.raises(RemoteCommandError, match="timed out") as info:
        execute_remote_bulk_cmd(sshd.target(), commands, timeout=2)
    assert info.value.command == ["sleep", "30"]
    assert limits == [2, 2, 2]
    assert not marker.exists()


def test_reconnects_after_the_connection_dies(sshd: SshServer) -> None:
    target = sshd.target()
    before = sshd.accepted_connections()
    assert execute_remote_cmd(target, ["true"]).ok
    # kill this session's sshd process on the server: the cached transport dies under us
    with pytest.raises(RemoteCommandError, match=r"connection lost|without an exit status"):
        execute_remote_cmd(target, ["sh", "-c", "kill -9 $PPID"])
    assert execute_remote_cmd(target, ["echo", "back"]).stdout == "back\n"
    assert sshd.accepted_connections() == before + 2


def test_hung_server_does_not_hang_the_caller(sshd: SshServer) -> None:
    """The reason names the 1 s bound that ended the wait. Should the bound ever go, the
    frozen server wakes up after a while (a timer, not an assertion): the command then
    succeeds and the test fails instead of hanging the suite."""
    target = sshd.target(connect_timeout=1.0)
    session_pid = int(execute_remote_cmd(target, ["sh", "-c", "echo $PPID"]).stdout)
    os.kill(session_pid, signal.SIGSTOP)  # the server side of our cached connection freezes
    wake = threading.Timer(60, os.kill, (session_pid, signal.SIGCONT))
    wake.start()
    try:
        with pytest.raises(RemoteCommandError) as info:
            execute_remote_cmd(target, ["true"], timeout=1.0)
        assert info.value.reason == "SSH server did not answer within 1.0 s"
    finally:
        wake.cancel()
        os.kill(session_pid, signal.SIGCONT)
    # the hung connection was dropped: the next command gets a fresh one
    before = sshd.accepted_connections()
    assert execute_remote_cmd(target, ["true"]).ok
    assert sshd.accepted_connections() == before + 1


def test_forked_child_opens_its_own_connection(sshd: SshServer) -> None:
    target = sshd.target()
    before = sshd.accepted_connections()
    assert execute_remote_cmd(target, ["true"]).ok
    pid = os.fork()
    if pid == 0:  # child: must never return into pytest
        code = 1
        try:
            code = 0 if execute_remote_cmd(target, ["echo", "child"]).stdout == "child\n" else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert execute_remote_cmd(target, ["echo", "parent"]).stdout == "parent\n"
    assert sshd.accepted_connections() == before + 2


def test_threads_share_one_connection(sshd: SshServer) -> None:
    target = sshd.target()
    before = sshd.accepted_connections()
    outputs: list[str] = []
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(3):
                outputs.append(execute_remote_cmd(target, ["echo", f"{n}-{i}"]).stdout)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert sorted(outputs) == sorted(f"{n}-{i}\n" for n in range(8) for i in range(3))
    assert sshd.accepted_connections() == before + 1


# --------------------------------------------------------------------------- host status


def test_is_host_available(sshd: SshServer, tmp_path: Path) -> None:
    assert is_host_available(sshd.target()) is True
    assert is_host_available(sshd.target(port=free_port())) is False
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    assert is_host_available(sshd.target(known_hosts=str(empty))) is False


def test_a_host_that_never_answers_is_down_within_the_connect_timeout(
    sshd: SshServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A peer that takes the TCP connection and then says nothing (a hung host) is DOWN,
    and every stage of the connect is bounded by the target's connect timeout: without
    those bounds paramiko waits 15 s for the banner, with the same answer in the end.
    (No address is sure to be a black hole on every network: this machine's gateway is
    TEST-NET-1's 192.0.2.1.)"""
    attempts = _recorded_connects(monkeypatch)
    with socket.socket() as silent:
        silent.bind((HOST, 0))
        silent.listen()  # the kernel completes the handshake; nobody ever speaks
        target = sshd.target(port=silent.getsockname()[1], connect_timeout=1)
        assert is_host_available(target) is False
    bounds = ("timeout", "banner_timeout", "auth_timeout", "channel_timeout")
    assert [[kwargs[b] for b in bounds] for kwargs in attempts] == [[1, 1, 1, 1]]


def _recorded_connects(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The keyword arguments of every SSH connect attempt from now on."""
    import paramiko

    attempts: list[dict[str, Any]] = []
    connect = paramiko.SSHClient.connect

    def recorded(self: paramiko.SSHClient, *args: Any, **kwargs: Any) -> None:
        attempts.append(kwargs)
        connect(self, *args, **kwargs)

    monkeypatch.setattr(paramiko.SSHClient, "connect", recorded)
    return attempts


# --------------------------------------------------------------------------- local


def test_run_local_success_is_literal() -> None:
    result = run_local(["printf", "%s|", "a b", "$HOME;id"], timeout=5)
    assert result == CommandResult(0, "a b|$HOME;id|", "")


def test_run_local_failure_names_localhost_and_command() -> None:
    argv = ["ls", "/nonexistent-baadal-dir"]
    assert run_local(argv, timeout=5, check=False).exit_code == 2
    with pytest.raises(RemoteCommandError) as info:
        run_local(argv, timeout=5)
    assert info.value.host == "localhost"
    assert info.value.exit_code == 2
    assert info.value.reason.startswith("exit 2: ls: cannot access")
    assert str(info.value).startswith("command 'ls /nonexistent-baadal-dir' on localhost failed")
    with pytest.raises(RemoteCommandError, match="command not found: baadal-no-such-tool"):
        run_local(["baadal-no-such-tool"], timeout=5)


def test_run_local_timeout_kills_the_command() -> None:
    """The call returns at the timeout (the command would take a minute) and the command
    is gone, not left running."""
    argv = ["sleep", "61.25"]  # a command line no other process has
    with pytest.raises(RemoteCommandError, match=r"on localhost failed: timed out after 0\.5 s"):
        run_local(argv, timeout=0.5)
    assert not _running(argv)


def _running(argv: list[str]) -> bool:
    """Whether a process with exactly this command line exists."""
    wanted = "\0".join(argv).encode() + b"\0"
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if cmdline.read_bytes() == wanted:
                return True
        except OSError:  # the process ended while we looked
            continue
    return False
