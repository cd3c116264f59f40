"""Logging in through an LDAP directory (the seed's fetch_ldap_user), with ldap3.

A person is the entry ``(uid=<username>)`` below ``ldap.ldap_dn``, found by an anonymous
search or one bound as ``ldap.bind_dn``; the password is checked by binding as that
entry. The account is named by the entry's own uid (a directory matches uids without
regard to case: "ALICE" is alice). A login never tells whether the uid exists: an
unknown one costs a bind as well, and a password the client library refuses counts as a
wrong one. An empty password is refused before anything is sent: LDAP treats a bind
without a password as an anonymous one, which would "succeed" for anybody.

Passwords travel only over TLS whose certificate is checked (``[ldap] ca_file``, else the
system's CAs): ``ldaps://``, or ``ldap://`` with ``start_tls``; plain ``ldap://`` is
refused unless ``allow_insecure`` says clear-text passwords are wanted.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
from pathlib import Path

from ldap3 import NONE, SUBTREE, Connection, Server, Tls
from ldap3.core.exceptions import (
    LDAPException,
    LDAPPasswordIsMandatoryError,
    LDAPSASLPrepError,
)
from ldap3.utils.conv import escape_filter_chars

from baadal.auth.accounts import UserInfo
from baadal.config import Settings, read_secret_file
from baadal.errors import ConfigError, RemoteCommandError

log = logging.getLogger("baadal")

_ATTRIBUTES = ["uid", "givenName", "sn", "cn", "mail", "o"]
#: LDAP result codes: success, size limit exceeded (two matches), no such object
_SUCCESS, _SIZE_LIMIT, _NO_SUCH_OBJECT = 0, 4, 32
#: what an unknown uid binds as, so that it takes as long as a known one
_NOBODY = "cn=baadal-no-such-user"


def _seconds(settings: Settings) -> int:
    """ldap3 packs its timeouts as whole seconds."""
    return max(1, round(settings.ldap.timeout_s))


def _tls(settings: Settings) -> Tls:
    """Certificate and host name checked, against ca_file or the system's CAs."""
    ca_file = settings.ldap.ca_file
    if ca_file and not Path(ca_file).is_file():
        raise ConfigError(f"[ldap] ca_file {ca_file} is not a readable file")
    return Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=ca_file or None)


def _server(settings: Settings) -> Server:
    conf = settings.ldap
    if not conf.ldap_url or not conf.ldap_dn:
        raise ConfigError("LDAP logins need [ldap] ldap_url and ldap_dn")
    scheme = conf.ldap_url.split("://", 1)[0].lower()
    if scheme not in ("ldap", "ldaps"):
        raise ConfigError(f"[ldap] ldap_url {conf.ldap_url!r} is not an ldap:// or ldaps:// URL")
    if scheme == "ldap" and not (conf.start_tls or conf.allow_insecure):
        raise ConfigError(
            f"[ldap] ldap_url {conf.ldap_url} would send passwords in clear: use ldaps://,"
            " or set [ldap] start_tls = true (allow_insecure = true only for testing)"
        )
    tls = _tls(settings) if scheme == "ldaps" or conf.start_tls else None
    return Server(
        conf.ldap_url,
        use_ssl=scheme == "ldaps",
        tls=tls,
        get_info=NONE,
        connect_timeout=_seconds(settings),
    )


def _close(conn: Connection) -> None:
    """Unbind; a connection whose TLS handshake failed has no socket left to say it on."""
    with contextlib.suppress(LDAPException):
        conn.unbind()


def _bind(conn: Connection, settings: Settings) -> bool:
    """Open the connection, upgrade it with StartTLS when asked (the certificate is
    checked before any password is sent), then bind."""
    conn.open(read_server_info=False)
    if settings.ldap.start_tls and not conn.server.ssl and not conn.start_tls(False):
        reason = f"{conn.result.get('description')}: {conn.result.get('message')}"
        raise RemoteCommandError(settings.ldap.ldap_url, ["ldap StartTLS"], reason)
    return bool(conn.bind())


def _first(entry_attrs: dict[str, list[str]], name: str) -> str:
    values = entry_attrs.get(name) or []
    if isinstance(values, str):
        return values
    return str(values[0]) if values else ""


def _searcher(settings: Settings) -> Connection:
    conf = settings.ldap
    password = None
    if conf.bind_dn:
        password = read_secret_file(conf.bind_password_file, "[ldap] bind_password_file")
        if not password:
            raise ConfigError(f"[ldap] bind_password_file {conf.bind_password_file} is empty")
    return Connection(
        _server(settings), user=conf.bind_dn or None, password=password,
        receive_timeout=_seconds(settings), raise_exceptions=False,
    )  # fmt: skip


def _search(settings: Settings, username: str) -> tuple[str, UserInfo] | None:
    conf = settings.ldap
    conn = _searcher(settings)
    try:
        if not _bind(conn, settings):
            raise ConfigError(f"the LDAP search bind as {conf.bind_dn or 'anonymous'} failed")
        conn.search(
            conf.ldap_dn,
            f"(uid={escape_filter_chars(username)})",
            search_scope=SUBTREE,
            attributes=_ATTRIBUTES,
            size_limit=2,
        )
        result = conn.result.get("result", _SUCCESS)
        entries = [e for e in conn.response or [] if e.get("type") == "searchResEntry"]
    except LDAPException as exc:
        raise RemoteCommandError(conf.ldap_url, ["ldap search", username], str(exc)) from None
    finally:
        _close(conn)
    if result == _NO_SUCH_OBJECT:
        raise ConfigError(f"[ldap] ldap_dn {conf.ldap_dn!r} does not exist in the directory")
    if result not in (_SUCCESS, _SIZE_LIMIT):
        reason = f"{conn.result.get('description')}: {conn.result.get('message')}"
        raise RemoteCommandError(conf.ldap_url, ["ldap search", username], reason)
    if len(entries) != 1:
        if len(entries) > 1:
            log.warning("LDAP: uid %r matches several entries; nobody logs in as it", username)
        return None
    attrs = entries[0]["attributes"]
    info = UserInfo(
        username=_first(attrs, "uid") or username,
        first_name=_first(attrs, "givenName"),
        last_name=_first(attrs, "sn"),
        email=_first(attrs, "mail") or None,
        organisation=_first(attrs, "o") or None,
    )
    return entries[0]["dn"], info


def fetch_ldap_user(settings: Settings, username: str) -> UserInfo | None:
    """Who ``username`` is in the directory; None if the directory does not know them."""
    found = _search(settings, username)
    return None if found is None else found[1]


def _binds(settings: Settings, dn: str, password: str) -> bool:
    conn = Connection(
        _server(settings), user=dn, password=password,
        receive_timeout=_seconds(settings), raise_exceptions=False,
    )  # fmt: skip
    try:  # not `with`: entering binds and raises on a wrong password
        return _bind(conn, settings)
    except (LDAPSASLPrepError, LDAPPasswordIsMandatoryError):
        return False  # characters a password cannot hold: just a wrong password
    except LDAPException as exc:
        raise RemoteCommandError(settings.ldap.ldap_url, ["ldap bind", dn], str(exc)) from None
    finally:
        _close(conn)


def ldap_authenticate(settings: Settings, username: str, password: str) -> UserInfo | None:
    """The person, if ``password`` is theirs; None otherwise."""
    if not password:
        return None
    found = _search(settings, username)
    if found is None:
        _binds(settings, f"{_NOBODY},{settings.ldap.ldap_dn}", password)
        return None
    dn, info = found
    return info if _binds(settings, dn, password) else None
