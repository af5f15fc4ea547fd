"""The safety of the web app: errors as JSON, and the checks every request passes.

- ``Host`` must be a name the server was bound to or a loopback name, so a page
  on another site cannot reach it through a DNS name that points at 127.0.0.1
  (DNS rebinding).
- A request that changes something must be JSON (a cross-site form cannot send
  that without the browser asking first) and, when the browser says where it
  comes from (``Origin``, ``Sec-Fetch-Site``), come from this same origin (CSRF).
- With a token (serving another host than loopback) every request carries it:
  in ``?token=`` once (then a cookie), a cookie, or ``Authorization: Bearer``.
- Bodies are bounded; no path from a request ever reaches the file system.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from modelvault.errors import (
    AlreadyExistsError,
    ImageStoreError,
    ModelVaultError,
    NotFoundError,
    ValidationError,
)
from modelvault.web.context import context_of

log = logging.getLogger("modelvault.web")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
TOKEN_COOKIE = "modelvault_token"
WILDCARDS = frozenset({"0.0.0.0", "::", ""})
ANY_ADDRESS = "*address*"  # in the allowed names: any IP address is one
_STATUS_OF: tuple[tuple[type[ModelVaultError], int], ...] = (
    (NotFoundError, 404),
    (ValidationError, 400),
    (AlreadyExistsError, 409),
    (ImageStoreError, 404),
)


class ApiError(Exception):
    """A refusal with its HTTP status; the message is the sentence the client shows."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def error_response(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def host_name(host: str) -> str:
    """The name in a ``Host`` header, without its port: ``[::1]:8188`` -> ``::1``."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def allowed_hosts(bound: str | None, extra: tuple[str, ...] = ()) -> frozenset[str]:
    names = {host_name(h) for h in (*extra, *([bound] if bound else []))}
    if names & WILDCARDS:  # every address of this machine: any address, but no DNS name
        names.add(ANY_ADDRESS)
    return frozenset(LOOPBACK_NAMES | names)


def host_allowed(name: str, allowed: frozenset[str]) -> bool:
    """Whether ``Host`` names this server. An address is no name a rebinding can
    move, so a server bound to all addresses takes any address (a token still guards it)."""
    if name in allowed:
        return True
    if ANY_ADDRESS not in allowed:
        return False
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Check the request, run it, and turn every failure into ``{"error": sentence}``."""
    try:
        check_request(request)
        response = await handler(request)
    except ApiError as exc:
        return error_response(exc.status, str(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(exc.status, _http_sentence(exc))
    except ModelVaultError as exc:
        return error_response(_status_of(exc), str(exc))
    except Exception:
        log.exception("the web request %s %s failed", request.method, request.rel_url)
        return error_response(500, "the server failed on this request: see its log.")
    _remember_token(request, response)
    return response


def check_request(request: web.Request) -> None:
    context = context_of(request)
    name = host_name(request.host)
    if not host_allowed(name, context.allowed_hosts):
        raise ApiError(
            403,
            f"the host name {name!r} is not this server's: open it as http://127.0.0.1 "
            "or with the name it was started with.",
        )
    if context.token is not None and not _token_given(request, context.token):
        raise ApiError(401, "this server needs its token: open the address it printed.")
    if request.method in UNSAFE_METHODS:
        _check_same_origin(request)
        if request.content_type != "application/json":
            raise ApiError(415, "send changes as JSON (Content-Type: application/json).")


def _check_same_origin(request: web.Request) -> None:
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("same-origin", "none"):
        raise ApiError(403, f"a change from another site ({site}) is refused.")
    origin = request.headers.get("Origin")
    if origin is not None and origin != f"{request.scheme}://{request.host}":
        raise ApiError(403, f"a change from another origin ({origin}) is refused.")


def _token_given(request: web.Request, token: str) -> bool:
    bearer = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    given = [request.query.get("token", ""), request.cookies.get(TOKEN_COOKIE, ""), bearer]
    return any(hmac.compare_digest(g.encode(), token.encode()) for g in given if g)


def _remember_token(request: web.Request, response: web.StreamResponse) -> None:
    """A token given in the address becomes a cookie, so the page's own requests carry it."""
    token = context_of(request).token
    if token is not None and request.query.get("token") and not response.prepared:
        response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="Strict")


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object, read no further than the size limit."""
    limit = context_of(request).max_body_bytes
    if (request.content_length or 0) > limit:
        raise ApiError(413, f"the request is larger than {limit} bytes.")
    raw = await request.content.read(limit + 1)
    if len(raw) > limit:
        raise ApiError(413, f"the request is larger than {limit} bytes.")
    try:
        data = json.loads(raw or b"{}")
    except (UnicodeDecodeError, ValueError):
        raise ApiError(400, "the request body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the request body must be a JSON object.")
    return data


def _status_of(exc: ModelVaultError) -> int:
    for kind, status in _STATUS_OF:
        if isinstance(exc, kind):
            return status
    return 500


def _http_sentence(exc: web.HTTPException) -> str:
    if exc.status == 404:
        return "there is nothing at this address."
    if exc.status == 405:
        return "this address does not take that method."
    if exc.status == 413:
        return "the request is too large."
    return str(exc.reason).rstrip(".") + "."
