"""Logging in and out, registering, one's own account (password, mails) and API tokens."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Path, Request
from fastapi.responses import Response

from baadal import constants as C
from baadal.errors import BaadalError, LoginThrottled, Throttled, ValidationError
from baadal.services import organisations, runtime, tokens, users, web_sessions
from baadal.web.pages import (
    VisitorDep,
    check_form_token,
    client_address,
    local_path,
    redirect,
    render,
    set_cookie,
    settings_of,
)

router = APIRouter(include_in_schema=False)

#: a form field of free text: bounded before any service sees it
Field = Annotated[str, Form(max_length=1024)]
Flag = Annotated[bool, Form()]


@router.get("/login")
def login_page(request: Request, next: str = "/") -> Response:
    return render(request, "login.html", next=local_path(next))


@router.post("/login", dependencies=[Depends(check_form_token)])
def login(
    request: Request,
    username: Field,
    password: Field,
    next: Annotated[str, Form(max_length=512)] = "/",
) -> Response:
    settings = settings_of(request)
    try:
        done = web_sessions.log_in(
            runtime.checked_engine(settings),
            settings,
            username.strip(),
            password,
            source=client_address(request),
        )
    except BaadalError as exc:
        status = 429 if isinstance(exc, LoginThrottled) else 401
        page = render(request, "login.html", status=status, error=str(exc), next=local_path(next))
        if isinstance(exc, LoginThrottled):
            page.headers["Retry-After"] = str(exc.retry_after_s)
        return page
    response = redirect(request, local_path(next))
    set_cookie(
        request,
        response,
        C.WEB_SESSION_COOKIE,
        done.cookie,
        max_age=settings.web.session_hours * 3600,
    )
    response.delete_cookie(C.WEB_FORM_COOKIE, path="/")
    return response


@router.post("/logout")
def logout(request: Request, visitor: VisitorDep) -> Response:
    with visitor.transaction() as session:
        web_sessions.log_out(session, visitor.settings, request.cookies[C.WEB_SESSION_COOKIE])
    response = redirect(request, "/login", "logged out")
    response.delete_cookie(C.WEB_SESSION_COOKIE, path="/")
    return response


@router.get("/register")
def register_page(request: Request) -> Response:
    with runtime.transaction(settings_of(request)) as session:
        offered = organisations.registration_organisations(session)
    return render(request, "register.html", organisations=offered, values={})


@router.post("/register", dependencies=[Depends(check_form_token)])
def register(
    request: Request,
    username: Field,
    password: Field,
    password_again: Field,
    email: Field = "",
    first_name: Field = "",
    last_name: Field = "",
    organisation: Field = "",
) -> Response:
    settings = settings_of(request)
    values = {
        "username": username,
        "email": email,
        "first_name": first_name,
        "last_name": last_name,
        "organisation": organisation,
    }
    try:
        if password != password_again:
            raise ValidationError("the two passwords differ")
        with runtime.transaction(settings) as session:
            account = users.register_self(
                session,
                settings,
                username=username.strip(),
                password=password,
                email=email.strip() or None,
                first_name=first_name,
                last_name=last_name,
                organisation=organisation or None,
                source=client_address(request),
            )
    except BaadalError as exc:
        with runtime.transaction(settings) as session:
            offered = organisations.registration_organisations(session)
        page = render(
            request,
            "register.html",
            status=429 if isinstance(exc, Throttled) else 422,
            error=str(exc),
            organisations=offered,
            values=values,
        )
        if isinstance(exc, Throttled):
            page.headers["Retry-After"] = str(exc.retry_after_s)
        return page
    if account.state == "active":
        return redirect(request, "/login", f"account {account.username} made: log in")
    return redirect(
        request,
        "/login",
        f"account {account.username} made: it awaits an administrator's approval",
    )


@router.get("/account")
def account_page(request: Request, visitor: VisitorDep) -> Response:
    with visitor.transaction() as session:
        account = users.get_account(session, visitor.actor, visitor.actor.username)
        open_sessions = web_sessions.list_sessions(
            session,
            visitor.actor,
            visitor.settings,
            cookie=request.cookies.get(C.WEB_SESSION_COOKIE),
        )
    local = visitor.settings.auth.auth_type == C.AuthType.DB
    return render(
        request,
        "account.html",
        visitor,
        account=account,
        local_passwords=local,
        sessions=open_sessions,
    )


@router.post("/account/sessions/end")
def end_other_sessions(request: Request, visitor: VisitorDep) -> Response:
    """Log out everywhere else (a phone left somewhere, a shared computer)."""
    with visitor.transaction() as session:
        ended = web_sessions.end_sessions(
            session,
            visitor.actor,
            visitor.settings,
            keep_cookie=request.cookies.get(C.WEB_SESSION_COOKIE),
        )
    return redirect(request, "/account", f"{ended} other session(s) ended")


@router.post("/account/password")
def change_password(
    request: Request,
    visitor: VisitorDep,
    current: Field,
    new: Field,
    new_again: Field,
) -> Response:
    """The current password first (a session left open is not the account), then the
    new one; every session of the account ends, this one too."""
    settings = visitor.settings
    if new != new_again:
        return redirect(request, "/account", "the two new passwords differ", error=True)
    try:
        users.check_login(
            runtime.checked_engine(settings),
            settings,
            visitor.actor.username,
            current,
            source=client_address(request),
        )
        with visitor.transaction() as session:
            users.set_password(session, visitor.actor, visitor.actor.username, new)
    except BaadalError as exc:
        return redirect(request, "/account", str(exc), error=True)
    response = redirect(request, "/login", "password changed: log in with the new one")
    response.delete_cookie(C.WEB_SESSION_COOKIE, path="/")
    return response


@router.post("/account/mails")
def set_mails(request: Request, visitor: VisitorDep, task_mails: Flag = False) -> Response:
    with visitor.transaction() as session:
        users.set_task_mails(session, visitor.actor, visitor.actor.username, task_mails)
    said = "on" if task_mails else "off"
    return redirect(request, "/account", f"mails when a task of your VMs ends: {said}")


@router.get("/tokens")
def tokens_page(request: Request, visitor: VisitorDep) -> Response:
    with visitor.transaction() as session:
        found = tokens.list_tokens(session, visitor.actor).items
    return render(request, "tokens.html", visitor, tokens=found, new=None)


@router.post("/tokens")
def create_token(
    request: Request,
    visitor: VisitorDep,
    name: Annotated[str, Form(max_length=64)] = "api",
    expires_days: Annotated[str, Form(max_length=8)] = "",
) -> Response:
    """The token is on this answer only (not a redirect: it is never stored)."""
    days = int(expires_days) if expires_days.strip().isdigit() else None
    if expires_days.strip() and days is None:
        return redirect(request, "/tokens", "validity: a whole number of days", error=True)
    with visitor.transaction() as session:
        new = tokens.create_token(session, visitor.actor, name=name, expires_days=days)
    with visitor.transaction() as session:
        found = tokens.list_tokens(session, visitor.actor).items
    page = render(request, "tokens.html", visitor, tokens=found, new=new)
    page.headers["Cache-Control"] = "no-store"
    return page


@router.post("/tokens/{token_id}/revoke")
def revoke_token(
    request: Request, visitor: VisitorDep, token_id: Annotated[int, Path(ge=1, le=C.ROW_ID_MAX)]
) -> Response:
    with visitor.transaction() as session:
        info = tokens.revoke_token(session, visitor.actor, token_id)
    return redirect(request, "/tokens", f"token {info.name} ({info.prefix}…) revoked")
