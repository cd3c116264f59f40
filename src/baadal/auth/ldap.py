"""Logging in through an LDAP directory (the seed's fetch_ldap_user), with ldap3.

A person is the entry ``(uid=<username>)`` below ``ldap.ldap_dn``, found by an anonymous
search or one bound as ``ldap.bind_dn``; the password is checked by binding as that
entry. An empty password is refused before anything is sent: LDAP treats a bind without
a password as an anonymous one, which would "succeed" for anybody.
"""

from __future__ import annotations

from ldap3 import NONE, SUBTREE, Connection, Server
from ldap3.core.exceptions import LDAPException
from ldap3.utils.conv import escape_filter_chars

from baadal.auth.users import UserInfo
from baadal.config import Settings, read_secret_file
from baadal.errors import ConfigError, RemoteCommandError

_ATTRIBUTES = ["uid", "givenName", "sn", "cn", "mail", "o"]


def _server(settings: Settings) -> Server:
    conf = settings.ldap
    if not conf.ldap_url or not conf.ldap_dn:
        raise ConfigError("LDAP logins need [ldap] ldap_url and ldap_dn")
    return Server(conf.ldap_url, get_info=NONE, connect_timeout=_seconds(settings))


def _seconds(settings: Settings) -> int:
    """ldap3 packs its timeouts as whole seconds."""
    return max(1, round(settings.ldap.timeout_s))


def _first(entry_attrs: dict[str, list[str]], name: str) -> str:
    values = entry_attrs.get(name) or []
    return str(values[0]) if values else ""


def _search(settings: Settings, username: str) -> tuple[str, UserInfo] | None:
    conf = settings.ldap
    server = _server(settings)
    password = (
        read_secret_file(conf.bind_password_file, "[ldap] bind_password_file")
        if conf.bind_dn
        else None
    )
    try:
        with Connection(
            server, user=conf.bind_dn or None, password=password, auto_bind=True,
            receive_timeout=_seconds(settings), raise_exceptions=False,
        ) as conn:  # fmt: skip
            conn.search(
                conf.ldap_dn,
                f"(uid={escape_filter_chars(username)})",
                search_scope=SUBTREE,
                attributes=_ATTRIBUTES,
                size_limit=2,
            )
            entries = [e for e in conn.response or [] if e.get("type") == "searchResEntry"]
    except LDAPException as exc:
        raise RemoteCommandError(conf.ldap_url, ["ldap search", username], str(exc)) from None
    if len(entries) != 1:
        return None  # nobody, or an ambiguous uid: nobody to log in as
    attrs = entries[0]["attributes"]
    info = UserInfo(
        username=username,
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


def ldap_authenticate(settings: Settings, username: str, password: str) -> UserInfo | None:
    """The person, if ``password`` is theirs; None otherwise."""
    if not password:
        return None
    found = _search(settings, username)
    if found is None:
        return None
    dn, info = found
    conn = Connection(
        _server(settings), user=dn, password=password,
        receive_timeout=_seconds(settings), raise_exceptions=False,
    )  # fmt: skip
    try:  # not `with`: entering binds and raises on a wrong password
        return info if conn.bind() else None
    except LDAPException as exc:
        raise RemoteCommandError(
            settings.ldap.ldap_url, ["ldap bind", username], str(exc)
        ) from None
    finally:
        conn.unbind()
