"""Plain-text mails from templates: one file per kind in ``templates/``, a ``Subject:``
line, an empty line, then the body, filled in with :class:`string.Template` (``$name``).

Values come from people (VM names, a rejection's reason), so the subject is made one line
whatever they hold: a line break there would start a header of its own.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources

from baadal import constants as C
from baadal.errors import NotFoundError

_SUBJECT = "Subject: "
#: control characters (a tab or line break too): not in a header
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]+")
#: control characters a body may not hold (line breaks and tabs may stay)
_BODY_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


@dataclass(frozen=True)
class Composed:
    subject: str
    body: str


def template_names() -> list[str]:
    """Every kind of mail there is a template for."""
    folder = resources.files(__package__).joinpath("templates")
    return sorted(p.name.removesuffix(".txt") for p in folder.iterdir() if p.name.endswith(".txt"))


@cache
def _template(kind: str) -> tuple[string.Template, string.Template]:
    if kind not in template_names():
        raise NotFoundError(f"no mail template {kind!r}")
    text = resources.files(__package__).joinpath("templates", f"{kind}.txt").read_text("utf-8")
    first, blank, body = text.split("\n", 2)
    if not first.startswith(_SUBJECT) or blank:
        raise ValueError(f"mail template {kind}: 'Subject: ...' and an empty line come first")
    return string.Template(first.removeprefix(_SUBJECT)), string.Template(body)


def render(kind: str, values: Mapping[str, object]) -> Composed:
    """The mail ``kind`` with ``values`` filled in; a name the template uses and the
    values lack is a KeyError (a bug in the caller, found by the tests)."""
    subject, body = _template(kind)
    text = {k: "" if v is None else str(v) for k, v in values.items()}
    one_line = _CONTROLS.sub(" ", subject.substitute(text)).strip()
    return Composed(
        subject=one_line[: C.MAIL_SUBJECT_MAX],
        body=_BODY_CONTROLS.sub("", body.substitute(text)),
    )
