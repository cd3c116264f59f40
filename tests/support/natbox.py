"""A NAT box in memory: answers the iptables and ip commands nat_box.py sends the way a
real box does, so NAT behaviour (and "no rule changed") can be checked without SSH."""

from __future__ import annotations

import shlex

from baadal.drivers.remote import CommandResult, RemoteTarget
from baadal.errors import RemoteCommandError


class FakeNatBox:
    """Answers the commands nat_box.py sends the way iptables and ip do on a real box."""

    def __init__(self) -> None:
        self.rules: list[tuple[str, tuple[str, ...]]] = []
        self.addresses = {"10.99.200.2": 24}
        self.commands: list[list[str]] = []
        self.fail_on: str | None = None

    def __call__(
        self, target: RemoteTarget, argv: list[str], *, check: bool = True, **_: object
    ) -> CommandResult:
        self.commands.append(argv)
        if self.fail_on and self.fail_on in argv:
            raise RemoteCommandError(target.label, argv, "connection lost")
        result = self._answer(argv)
        if check and result.exit_code:
            raise RemoteCommandError(target.label, argv, "failed", result.exit_code)
        return result

    def _answer(self, argv: list[str]) -> CommandResult:
        ok, missing = CommandResult(0, "", ""), CommandResult(1, "", "Bad rule")
        if argv[:2] == ["iptables-save", "-t"]:
            lines = [f"-A {c} {shlex.join(s)}" for c, s in self.rules]
            return CommandResult(0, "*nat\n" + "\n".join(lines) + "\nCOMMIT\n", "")
        if argv[0] == "iptables":
            op, chain = argv[3], argv[4]
            spec = tuple(argv[6:] if op == "-I" else argv[5:])
            if op == "-C":
                return ok if (chain, spec) in self.rules else missing
            if op == "-D":
                if (chain, spec) not in self.rules:
                    return missing
                self.rules.remove((chain, spec))
            elif op == "-I":
                self.rules.insert(0, (chain, spec))
            else:
                self.rules.append((chain, spec))
            return ok
        if argv[:4] == ["ip", "-o", "-4", "addr"]:
            text = "".join(
                f"3: pub0    inet {a}/{p} scope global pub0\n" for a, p in self.addresses.items()
            )
            return CommandResult(0, text, "")  # fmt: skip
        if argv[:3] == ["ip", "addr", "add"]:
            self.addresses[argv[3].split("/")[0]] = 32
            return ok
        if argv[:3] == ["ip", "addr", "del"]:
            return ok if self.addresses.pop(argv[3].split("/")[0], None) else missing
        raise AssertionError(f"unexpected command {argv}")

    def state(self) -> tuple[tuple[tuple[str, tuple[str, ...]], ...], tuple[tuple[str, int], ...]]:
        """Every rule and address on the box, for before/after comparisons."""
        return tuple(self.rules), tuple(sorted(self.addresses.items()))
