"""websockify as ``baadal serve`` runs it: websockify's own main, except that every
child it forks for a connection dies with the websockify that forked it. A child holds
the listening socket it inherited, so one left over after ``baadal serve`` died (even
by SIGKILL: the kernel then ends websockify, see ``cli/serve_command.py``) would keep
the console's port taken."""

from __future__ import annotations

import ctypes
import os
import signal

#: prctl(2) option: the signal the kernel sends a process when its parent dies
PR_SET_PDEATHSIG = 1


def end_with_parent(sig: signal.Signals = signal.SIGTERM) -> None:
    """The kernel sends ``sig`` to this process when its parent ends."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, sig)


def _child_ends_with_parent() -> None:
    # SIGKILL: a child runs websockify's SIGTERM handler, which may go on serving
    end_with_parent(signal.SIGKILL)
    if os.getppid() == 1:  # the parent died before the line above
        os._exit(0)


def main() -> None:
    from websockify.websocketproxy import websockify_init

    os.register_at_fork(after_in_child=_child_ends_with_parent)
    websockify_init()


if __name__ == "__main__":
    main()
