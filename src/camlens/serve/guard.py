"""What the viewer checks on every request, as plain ASGI middleware (no framework import).

* ``Host``: only the names the server was bound under (``127.0.0.1``, ``localhost``, ``[::1]`` with the
  port, the ``--host`` address and each ``--allowed-host``); any other gets 400, so a page elsewhere
  cannot reach the server by DNS rebinding.
* A state-changing request (POST, PUT, PATCH, DELETE) with an ``Origin`` that is not the served origin,
  or with ``Sec-Fetch-Site: cross-site``/``same-site``, gets 403; so does any ``/api`` request a browser
  marks ``Sec-Fetch-Site: cross-site``.
* A POST body must be declared as image bytes (``application/octet-stream`` or ``image/*``) or JSON, or
  not declared; the types an HTML form or a no-preflight ``fetch`` can send (``text/plain``,
  ``application/x-www-form-urlencoded``, ``multipart/form-data``) get 415.
* Every answer says: not in a frame (``X-Frame-Options: DENY``, CSP ``frame-ancestors 'none'``), no
  content sniffing, no referrer, no embedding by other sites.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

LOOPBACK = ("127.0.0.1", "localhost", "::1")
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'"
)
HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-resource-policy", b"same-origin"),
]
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
BODY_TYPES = ("application/octet-stream", "image/", "application/json")


def _authority(name: str, port: int | None) -> str:
    """``name`` as a Host header value: IPv6 in brackets, with ``:port`` unless it already has one."""
    name = name.strip().lower()
    if name.startswith("["):
        bracketed, _, rest = name.partition("]")
        return f"{bracketed}]{rest}" if rest.startswith(":") or port is None else f"{bracketed}]:{port}"
    if name.count(":") > 1:  # a bare IPv6 address
        return f"[{name}]" if port is None else f"[{name}]:{port}"
    if ":" in name or port is None:
        return name
    return f"{name}:{port}"


def allowed_hosts(host: str, port: int, extra: Iterable[str] = ()) -> list[str]:
    """The Host header values a server bound to ``host:port`` answers (with the port; without it too on 80).

    Example:
        >>> allowed_hosts("127.0.0.1", 8000, ["viewer.lan"])[:4]
        ['127.0.0.1:8000', 'localhost:8000', '[::1]:8000', 'viewer.lan:8000']
    """
    names = [*LOOPBACK, *[e for e in extra if e.strip()], host]
    out = [_authority(n, port) for n in names]
    if port == 80:
        out += [_authority(n, None) for n in names if ":" not in n.strip("[]") or n.startswith("[")]
    return list(dict.fromkeys(out))


class Guard:
    """ASGI middleware: the checks of this module around ``app``.

    Args:
        app: the ASGI app.
        hosts: the Host header values served (see :func:`allowed_hosts`); None: any (the app is hosted by
            a server that checks them itself).
    """

    def __init__(self, app: Any, hosts: Iterable[str] | None = None) -> None:
        self.app = app
        self.hosts = None if hosts is None else {h.lower() for h in hosts}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        refusal = self.refusal(scope, headers)
        if refusal is not None:
            status, message = refusal
            body = json.dumps({"detail": message}).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        *HEADERS,
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                message = {
                    **message,
                    "headers": [*message.get("headers", []), *(h for h in HEADERS if h[0] not in present)],
                }
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def refusal(self, scope: dict[str, Any], headers: dict[str, str]) -> tuple[int, str] | None:
        """``(status, one-line message)`` for a request refused, else None."""
        host = headers.get("host", "").strip().lower()
        if self.hosts is not None and host not in self.hosts:
            shown = host[:100] or "(none)"
            return 400, (
                f"host {shown!r} is not served here (served: {', '.join(sorted(self.hosts))}); "
                "to allow another name start camlens serve with --allowed-host NAME"
            )
        method = scope.get("method", "GET").upper()
        site = headers.get("sec-fetch-site", "").lower()
        if site == "cross-site" and scope.get("path", "").startswith("/api/"):
            return 403, "a request from another site is refused: open the viewer's own page"
        if method in SAFE_METHODS:
            return None
        if site == "same-site":
            return 403, "a request from another site is refused: open the viewer's own page"
        origin = headers.get("origin")
        if origin is not None:
            served = {f"http://{host}", f"https://{host}"}  # behind a TLS proxy the page is https
            if origin.strip().lower() not in served:
                return 403, f"a request from origin {origin[:100]!r} is refused: open the viewer's own page"
        kind = headers.get("content-type", "").split(";")[0].strip().lower()
        if kind and not kind.startswith(BODY_TYPES):
            if kind.startswith("multipart/"):
                return 415, "send the image's bytes as the request body, not as a form (curl --data-binary)"
            return 415, (
                f"a body of type {kind[:60]!r} is refused: send the image's bytes as application/octet-stream or "
                "image/* (curl -H 'Content-Type: application/octet-stream' --data-binary @cat.jpg)"
            )
        return None
