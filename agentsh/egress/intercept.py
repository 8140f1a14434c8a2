"""TLS interception toward hosts a sandbox's credentials are bound to: placeholders out, values in.

Only a connection to a host some credential of this sandbox is bound to
(creds.swap), or to a token endpoint the agents log in at (creds.oauth
LOGIN_HOSTS, once the sandbox trusts its CA: a login made inside is kept on
the host, Swaps.captured), is intercepted; every other one stays a plain
tunnel. For an
intercepted one the proxy first opens TLS to the upstream and verifies it
against the host's trust store (plus AGENTSH_UPSTREAM_CA, a PEM file, when
set: tests and private API servers), offering only http/1.1 in ALPN; then it
terminates the sandbox's TLS with a leaf certificate of the sandbox's own CA
(egress.ca; the sandbox trusts that CA through its CA bundle) and relays
HTTP/1.1 request by request (keep-alive, chunked and sized bodies passed
through as they come, `101 Switching Protocols` relayed raw). In each request
head the bound header's placeholder is replaced by the value (inside
`Basic` credentials too), and the bound query parameter's (percent-encoded);
a credential bound to bodies is swapped in the request body, read whole up
to BODY_LIMIT (Content-Length recomputed, a chunked body sent as one chunk;
form bodies percent-encoded, JSON escaped); any placeholder left anywhere else in a head, and
every placeholder in a plain-HTTP request, is sent unchanged and logged as a
warning. A value echoed in a response head is turned back into its
placeholder (bodies are passed as they are). A head that is malformed or larger than HEAD_LIMIT is refused with
400 or 431, and one naming another host (Host header or absolute target:
domain fronting on a shared front end) with 421; the connection is closed.
"""

from __future__ import annotations

import base64
import binascii
import os
import ssl
import sys
import threading

from agentsh.egress import ca

TYPE_CHECKING = False  # typing stays off the proxy's start
if TYPE_CHECKING:
    import socket
    from collections.abc import Callable
    from typing import Any

HEAD_LIMIT = 64 * 1024
LINE_LIMIT = 8 * 1024  # a chunk-size or trailer line
CHUNK = 1 << 18
UPSTREAM_CA_ENV = "AGENTSH_UPSTREAM_CA"
_TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


class Refusal(ValueError):
    """A request head the proxy will not pass on: (status, message)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


# -- the placeholders of one sandbox -------------------------------------------------------


class Swaps:
    """The sandbox's sealed placeholder record (creds.swap), re-read when it changes (one stat per check)."""

    def __init__(self, path: str, sandbox: str, key: bytes | None = None,
                 report: Callable[[str], object] | None = None, logins: dict[str, str] | None = None) -> None:
        self.path, self.sandbox, self._key = path, sandbox, key
        # host -> format: the token endpoints where a login made inside the sandbox is captured (creds.oauth)
        self.logins = logins if logins is not None else {}
        self.report = report  # told, once per version of the record, why it cannot be opened
        self._stamp = None
        self.by_host = {}  # host -> [(placeholder bytes, value bytes, header bytes or b"", name)]
        self.query_by_host = {}  # host -> [(placeholder bytes, value bytes, query parameter bytes, name)]
        self.body_by_host = {}  # host -> [(placeholder bytes, value bytes, name)]
        self.refreshing = {}  # entry name of an OAuth refresh token -> its "oauth" part (creds.oauth)
        self.token_only = frozenset()  # entry names swapped into bodies toward token endpoints only
        self.names = {}  # placeholder bytes -> (name, hosts)
        self._lock = threading.Lock()

    def current(self) -> Swaps:
        try:
            st = os.stat(self.path)
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        except OSError:
            stamp = None
        if stamp != self._stamp:
            with self._lock:
                self._load(stamp)
        return self

    def _load(self, stamp: tuple[int, int, int] | None) -> None:
        by_host, query_by_host, body_by_host, names, refreshing, token_only = {}, {}, {}, {}, {}, set()
        if stamp is not None:
            try:
                from agentsh.creds import (  # not at the top: this module's own swap() would shadow creds.swap
                    swap,
                    vault,
                )

                if self._key is None:
                    self._key = vault.load_key()
                entries = swap.load(self.path, self.sandbox, self._key)
            except Exception as e:  # a torn record or no key: nothing is swapped, nothing breaks
                problem = cache_problem(e)
                sys.stderr.write(f"agentsh proxy: {problem}\n")
                if self.report is not None:
                    self.report(problem)
                entries = {}
            for name, e in entries.items():
                value = e["value"].encode()
                role = (e.get("oauth") or {}).get("role")
                if role == "refresh":
                    refreshing[name] = e["oauth"]
                if role in ("refresh", "id"):
                    token_only.add(name)
                for ph in (e["placeholder"], *e.get("retired", ())):  # a replaced one stands for the value too
                    ph = ph.encode()
                    names[ph] = (name, tuple(e["hosts"]))
                    for host in e["hosts"]:
                        by_host.setdefault(host, []).append((ph, value, (e.get("header") or "").encode(), name))
                        if e.get("query"):
                            query_by_host.setdefault(host, []).append((ph, value, e["query"].encode(), name))
                        if e.get("body"):
                            body_by_host.setdefault(host, []).append((ph, value, name))
        self.by_host, self.query_by_host, self.body_by_host = by_host, query_by_host, body_by_host
        self.names, self.refreshing, self.token_only, self._stamp = names, refreshing, frozenset(token_only), stamp

    def refreshed(self, meta: dict, answer: dict) -> dict[str, str]:
        """New tokens from a token endpoint: sealed into the stored login; returns {token: new placeholder}.

        With no key yet (a login made inside, the sandbox's first credential)
        the cache key is made here, as any first credential would make it; a
        cache that cannot be opened (a passphrase with none given) raises,
        and the answer is then not passed on.
        """
        from agentsh.base.state import Store  # lazy: only for a refresh
        from agentsh.creds import oauth, vault  # lazy: only for a refresh

        root = os.path.dirname(os.path.dirname(os.path.dirname(self.path)))  # <state>/net/swap/<sandbox>.json
        with self._lock:
            if self._key is None:
                self._key = vault.load_key(create=True)
            return oauth.refreshed(Store(root), self.sandbox, self._key, meta, answer)

    def captured(self, fmt: str, host: str, answer: dict, grant: str = "") -> dict[str, str]:
        """A login made inside the sandbox: its tokens kept in the sandbox's record; {token: its placeholder}."""
        from agentsh.creds import oauth  # lazy: only for a login

        return self.refreshed(oauth.captured_meta(fmt, host, grant), answer)

    def bound(self, host: str) -> bool:
        return host in self.current().by_host

    def leftovers(self, data: bytes) -> list[str]:
        """Names of the placeholders present in `data` (bytes)."""
        return [name for ph, (name, _) in self.names.items() if ph in data]


def _chunk_size(line: bytes) -> int:
    """The size a chunked body's size line gives (extensions after ';' ignored); ValueError when malformed."""
    size = line[:-2].split(b";", 1)[0].strip(b" \t")
    # hex digits only: int() would also take "0x10", "+10" or "1_0", which another parser may read otherwise
    if not size or len(size) > 16 or size.strip(b"0123456789abcdefABCDEF"):
        raise ValueError("bad chunk size")
    return int(size, 16)


def cache_problem(error: Exception) -> str:
    """One line: why the proxy cannot open the placeholders, what that means, and the fix."""
    from agentsh.creds import vault  # lazy: only when the record cannot be opened

    message, fix = getattr(error, "message", None) or str(error), getattr(error, "fix", None)
    if fix and vault.PASSPHRASE_ENV in fix:  # no passphrase where the proxy started, or a wrong one
        fix = (f"set {vault.PASSPHRASE_ENV} in the environment the sandbox's proxy starts from (that of ab-up "
               "or ab-exec), then restart it: ab-down && ab-up")
    return f"cannot open the placeholders, so bound credentials go out as placeholders: {message}" \
        + (f"; {fix}" if fix else "")


# -- a TLS server side over a socket whose first bytes may be read already -------------------


class TLSConn:
    """One side of an intercepted connection: ssl.SSLObject over memory BIOs on a socket.

    The sandbox's side is a server whose first bytes may have been read
    already (a steered ClientHello); the upstream side a client verifying
    `server_hostname`. A read returns every record already received (one
    socket read brings many), so a body is forwarded in large pieces.
    """

    def __init__(self, sock: socket.socket, context: ssl.SSLContext, first: bytes = b"",
                 server_hostname: str | None = None) -> None:
        self.sock = sock
        self._in, self._out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = context.wrap_bio(self._in, self._out, server_side=server_hostname is None,
                                    server_hostname=server_hostname)
        if first:
            self._in.write(first)
        self._do(self.obj.do_handshake)

    def _flush(self) -> None:
        data = self._out.read()
        if data:
            self.sock.sendall(data)

    def _do(self, fn: Callable[..., Any], *args: object) -> Any:
        while True:
            try:
                result = fn(*args)
                self._flush()
                return result
            except ssl.SSLWantReadError:
                self._flush()
                data = self.sock.recv(CHUNK)
                if data:
                    self._in.write(data)
                else:
                    self._in.write_eof()

    def recv(self, n: int) -> bytes:
        try:
            data = self._do(self.obj.read, n)
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            return b""
        chunks, size = [data], len(data)
        while data and size < n and (self._in.pending or self.obj.pending()):
            try:
                data = self.obj.read(n - size)
            except ssl.SSLError:  # want-read, or the end: what was read is returned first
                break
            chunks.append(data)
            size += len(data)
        return b"".join(chunks) if len(chunks) > 1 else chunks[0]

    def sendall(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[self._do(self.obj.write, view):]

    def selected_alpn_protocol(self) -> str | None:
        return self.obj.selected_alpn_protocol()


class Stream:
    """Buffered reads over anything with recv(n) and sendall(data)."""

    def __init__(self, conn: TLSConn | socket.socket) -> None:
        self.conn, self.buf = conn, b""
        self.sendall = conn.sendall

    def _fill(self) -> bool:
        data = self.conn.recv(CHUNK)
        if not data:
            return False
        self.buf += data
        return True

    def head(self, refuse: bool = True) -> bytes | None:
        """One message head (through the blank line); None at EOF before any byte of it."""
        while True:
            end = self.buf.find(b"\r\n\r\n", 0, HEAD_LIMIT + 4)
            if end >= 0:
                head, self.buf = self.buf[:end + 4], self.buf[end + 4:]
                return head
            if len(self.buf) > HEAD_LIMIT:
                raise Refusal(431, "request head too large") if refuse else ValueError("response head too large")
            if not self._fill():
                if self.buf:
                    raise Refusal(400, "connection closed inside a head") if refuse else ValueError("cut head")
                return None

    def drain(self, limit: int = 1 << 20, seconds: float = 1.0) -> None:
        """Read and drop what the peer still sends, up to `limit` bytes or `seconds` of quiet."""
        sock = getattr(self.conn, "sock", None)
        try:
            if sock is not None:
                sock.settimeout(seconds)
            total = 0
            while total < limit:
                data = self.conn.recv(CHUNK)
                if not data:
                    return
                total += len(data)
        except (OSError, ValueError):
            pass

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            if len(self.buf) > LINE_LIMIT:
                raise ValueError("chunk line too long")
            if not self._fill():
                raise ValueError("connection closed inside a chunked body")
        end = self.buf.index(b"\r\n") + 2
        line, self.buf = self.buf[:end], self.buf[end:]
        return line

    def read(self, count: int) -> bytes:
        """Exactly `count` bytes."""
        while len(self.buf) < count:
            if not self._fill():
                raise ValueError("connection closed inside a body")
        data, self.buf = self.buf[:count], self.buf[count:]
        return data

    def copy(self, dst: Stream | TLSConn | socket.socket, count: int) -> int:
        """Exactly `count` bytes to dst; returns count."""
        left = count
        if self.buf:
            piece = self.buf[:left]
            self.buf = self.buf[len(piece):]
            dst.sendall(piece)
            left -= len(piece)
        while left:
            data = self.conn.recv(min(CHUNK, left))
            if not data:
                raise ValueError("connection closed inside a body")
            dst.sendall(data)
            left -= len(data)
        return count

    def rest(self, dst: Stream | TLSConn | socket.socket) -> int:
        """Everything until EOF to dst; returns the count."""
        total = 0
        while True:
            if self.buf:
                dst.sendall(self.buf)
                total += len(self.buf)
                self.buf = b""
            if not self._fill():
                return total


# -- HTTP/1.1 messages ------------------------------------------------------------------------


def parse_head(head: bytes, request: bool = True) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """(first line, [(name, value)]) of a head; Refusal(400) for anything malformed."""
    lines = head[:-4].split(b"\r\n")
    first = lines[0]
    if request:
        parts = first.split(b" ")
        if len(parts) != 3 or not parts[0] or not _TOKEN.issuperset(parts[0]) \
                or parts[2] not in (b"HTTP/1.1", b"HTTP/1.0"):
            raise Refusal(400, "not an HTTP/1.1 request line")
    headers = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name or not _TOKEN.issuperset(name):
            raise Refusal(400, f"malformed header line {line[:40]!r}")
        value = value.strip(b" \t")
        if any(c in value for c in b"\r\n\0"):
            raise Refusal(400, f"control character in header {name[:40]!r}")
        headers.append((name, value))
    for c in first:
        if c < 0x20 or c == 0x7f:
            raise Refusal(400, "control character in the request line")
    return first, headers


def _get(headers: list[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    return [v for n, v in headers if n.lower() == name]


def framing(headers: list[tuple[bytes, bytes]], request: bool = True) -> tuple[str, int | None]:
    """("chunked", None), ("length", N) or ("none", None); Refusal for what could smuggle a request."""
    te, cl = _get(headers, b"transfer-encoding"), _get(headers, b"content-length")
    if te:
        if cl and request:
            raise Refusal(400, "both Transfer-Encoding and Content-Length")
        if b",".join(te).strip().lower() != b"chunked":
            if request:
                raise Refusal(400, "a Transfer-Encoding other than chunked")
            return "close", None
        return "chunked", None
    if cl:
        if len(set(cl)) != 1 or not cl[0].isdigit() or len(cl[0]) > 18:
            raise Refusal(400, "a bad Content-Length")
        return "length", int(cl[0])
    return ("none" if request else "close"), None


def copy_body(src: Stream, dst: Stream | TLSConn | socket.socket, kind: str, count: int | None) -> int:
    if kind == "length":
        return src.copy(dst, count)
    if kind == "close":
        return src.rest(dst)
    if kind != "chunked":
        return 0
    total = 0
    while True:
        line = src.line()
        dst.sendall(line)
        total += len(line)
        size = _chunk_size(line)
        if size == 0:
            while True:  # trailers, through the blank line
                line = src.line()
                dst.sendall(line)
                total += len(line)
                if line == b"\r\n":
                    return total
        total += src.copy(dst, size + 2)


def swap(headers: list[tuple[bytes, bytes]],
         bound: list[tuple[bytes, bytes, bytes, str]]) -> tuple[list[tuple[bytes, bytes]], list[str]]:
    """Headers with the bound placeholders replaced; returns (headers, names swapped)."""
    out, swapped = [], []
    for name, value in headers:
        lower = name.lower()
        for placeholder, real, header, cred in bound:
            if lower != header:
                continue
            if placeholder in value:
                value = value.replace(placeholder, real)
                swapped.append(cred)
            elif lower == b"authorization" and value[:6].lower() == b"basic ":
                try:
                    decoded = base64.b64decode(value[6:].strip(), validate=True)
                except (binascii.Error, ValueError):
                    continue
                if placeholder in decoded:
                    value = value[:6] + base64.b64encode(decoded.replace(placeholder, real))
                    swapped.append(cred)
        out.append((name, value))
    return out, swapped


# -- placeholders in the URL and in request bodies ---------------------------------------------------

BODY_LIMIT = 1 << 20  # a request body searched for placeholders is read whole first: at most this much


def _quote(data: bytes) -> bytes:
    import urllib.parse  # lazy: only for a credential bound to a query parameter or a form body

    return urllib.parse.quote_from_bytes(data, safe="-._~").encode()


def _forms(placeholder: bytes) -> tuple[bytes, ...]:
    """The placeholder as it may appear in a URL or form: raw, and percent-encoded when that differs."""
    quoted = _quote(placeholder)
    return (placeholder,) if quoted == placeholder else (placeholder, quoted)


def swap_query(first: bytes, bound: list[tuple[bytes, bytes, bytes, str]]) -> tuple[bytes, list[str]]:
    """The request line with each bound query parameter's placeholder replaced by the value (percent-encoded).

    Only the value of a parameter of the bound name is touched: a
    placeholder anywhere else in the URL is left as it is (and warned about).
    """
    method, target, version = first.split(b" ")
    path, mark, query = target.partition(b"?")
    if not mark or not bound:
        return first, []
    import urllib.parse  # lazy: only for a credential bound to a query parameter

    parts, swapped = query.split(b"&"), []
    for i, part in enumerate(parts):
        name, eq, value = part.partition(b"=")
        if not eq:
            continue
        key = urllib.parse.unquote_to_bytes(name.replace(b"+", b" "))
        for placeholder, real, param, cred in bound:
            if key != param:
                continue
            for form in _forms(placeholder):
                if form in value:
                    value = value.replace(form, _quote(real))
                    swapped.append(cred)
                    break
        parts[i] = name + b"=" + value
    return b" ".join((method, path + b"?" + b"&".join(parts), version)), swapped


def token_path(first: bytes) -> bool:
    """Whether a request line's target is an OAuth token endpoint (its path ends in /oauth/token, or is
    /token: Google's, oauth2.googleapis.com/token), or GitHub's Copilot token exchange.

    An OAuth login's refresh and id tokens are swapped into bodies toward
    such a path only: an API that puts request bodies into its answers (a
    model asked to repeat its prompt) must never receive them.
    """
    target = first.split(b" ")[1].split(b"?", 1)[0]
    if b"://" in target:
        target = b"/" + target.split(b"://", 1)[1].partition(b"/")[2]
    if b"%" in target or any(seg in (b".", b"..") for seg in target.split(b"/")):  # no path a server rewrites
        return False
    return target.rstrip(b"/").endswith(b"/oauth/token") or target in (b"/token", b"/copilot_internal/v2/token")


def _body_form(headers: list[tuple[bytes, bytes]]) -> str:
    """How a value is written into this body: "form" (percent-encoded), "json" (escaped) or "raw"."""
    ctype = b",".join(_get(headers, b"content-type")).split(b";", 1)[0].strip().lower()
    if ctype == b"application/x-www-form-urlencoded":
        return "form"
    if ctype.endswith((b"/json", b"+json")):
        return "json"
    return "raw"


def swap_body(body: bytes, bound: list[tuple[bytes, bytes, str]], form: str) -> tuple[bytes, list[str]]:
    """A request body with the bound placeholders replaced; returns (body, names swapped)."""
    swapped = []
    for placeholder, real, cred in bound:
        if form == "form":
            forms, value = _forms(placeholder), _quote(real)
        elif form == "json":
            import json  # lazy: only for a credential bound to JSON bodies

            forms, value = (placeholder,), json.dumps(real.decode("utf-8", "surrogateescape"))[1:-1].encode()
        else:
            forms, value = (placeholder,), real
        for f in forms:
            if f in body:
                body = body.replace(f, value)
                swapped.append(cred)
                break
    return body, swapped


def _with_length(headers: list[tuple[bytes, bytes]], length: int) -> list[tuple[bytes, bytes]]:
    return [(n, str(length).encode() if n.lower() == b"content-length" else v) for n, v in headers]


def _read_chunks(src: Stream, limit: int) -> tuple[bytes, bytes, bytes | None, int]:
    """(raw bytes read, decoded body, trailers through the blank line or None when past `limit`, pending).

    Past the limit, `pending` is what remains of the chunk whose size line
    ends `raw` (its data and CRLF, unread): copy that, and the body goes on
    from a chunk boundary. A chunk is never read whole past the limit.
    """
    raw, body = [], []
    size_so_far = 0
    while True:
        line = src.line()
        raw.append(line)
        size = _chunk_size(line)
        if size == 0:
            trailers = []
            while True:
                line = src.line()
                trailers.append(line)
                if line == b"\r\n":
                    return b"".join(raw), b"".join(body), b"".join(trailers), 0
        if size_so_far + size > limit:
            return b"".join(raw), b"", None, size + 2
        data = src.read(size + 2)
        if data[-2:] != b"\r\n":
            raise ValueError("a chunk not ended by CRLF")
        raw.append(data)
        body.append(data[:-2])
        size_so_far += size


def grant_type(body: bytes, headers: list[tuple[bytes, bytes]]) -> str:
    """A token request's grant_type (JSON or form body), "" when it cannot be read."""
    form = _body_form(headers)
    try:
        if form == "json":
            import json  # lazy: only for a login request

            value = json.loads(body).get("grant_type")
        elif form == "form":
            from urllib.parse import parse_qs  # lazy: only for a login request

            value = (parse_qs(body.decode("ascii")).get("grant_type") or [""])[0]
        else:
            value = ""
    except (ValueError, AttributeError, UnicodeDecodeError):
        value = ""
    return value if isinstance(value, str) else ""


def send_swapped_body(client: Stream, upstream: Stream,
                      head: Callable[[list[tuple[bytes, bytes]], list[str]], bytes],
                      headers: list[tuple[bytes, bytes]], kind: str, count: int | None,
                      bound: list[tuple[bytes, bytes, str]], seen: list[bytes] | None = None) -> tuple[int, list[str]]:
    """Read a request body whole (up to BODY_LIMIT), swap the bound placeholders, send head and body.

    A sized body gets its Content-Length recomputed; a chunked one goes out
    as one chunk and its trailers. A body past BODY_LIMIT is sent as it
    came, unsearched. Returns (bytes sent, names swapped); `seen` gets the
    body as it came (nothing when it was too large to read).
    """
    form = _body_form(headers)
    if kind == "length":
        if count > BODY_LIMIT:
            out = head(headers, [])
            upstream.sendall(out)
            return len(out) + client.copy(upstream, count), []
        body = client.read(count)
        if seen is not None:
            seen.append(body)
        body, swapped = swap_body(body, bound, form)
        out = head(_with_length(headers, len(body)), swapped) + body
        upstream.sendall(out)
        return len(out), swapped
    raw, body, trailers, pending = _read_chunks(client, BODY_LIMIT)
    if trailers is None:  # too large to search: what was read as it came, then the rest
        out = head(headers, []) + raw
        upstream.sendall(out)
        return len(out) + client.copy(upstream, pending) + copy_body(client, upstream, "chunked", None), []
    if seen is not None:
        seen.append(body)
    body, swapped = swap_body(body, bound, form)
    out = head(headers, swapped) + (b"%x\r\n%s\r\n" % (len(body), body) if body else b"") + b"0\r\n" + trailers
    upstream.sendall(out)
    return len(out), swapped


def _refuse(stream: Stream, status: int, message: str) -> None:
    reason = {400: "Bad Request", 421: "Misdirected Request", 431: "Request Header Fields Too Large",
              502: "Bad Gateway"}.get(status, "Error")
    body = f"agentsh: {message}\n".encode()
    try:
        stream.sendall(f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
                       f"X-Agentsh-Policy: error\r\nConnection: close\r\n\r\n".encode() + body)
    except (OSError, ValueError):
        pass


def same_host(headers: list[tuple[bytes, bytes]], first: bytes, host: str) -> None:
    """Refusal(421) unless the request names `host` (Host header, and an absolute target if any).

    The upstream may be a shared front end (a CDN) that routes by Host: a
    request for another site on it must never carry the bound value.
    """
    hosts = _get(headers, b"host")
    target = first.split(b" ")[1]
    named = [h.decode("latin-1") for h in hosts]
    if b"://" in target:
        named.append(target.split(b"://", 1)[1].split(b"/", 1)[0].rsplit(b"@", 1)[-1].decode("latin-1"))
    if len(hosts) != 1:
        raise Refusal(400, "a request needs exactly one Host header")
    for text in named:
        text = text.strip().lower()
        name = text[1:text.find("]")] if text.startswith("[") else text.rsplit(":", 1)[0] if ":" in text else text
        if name.rstrip(".") != host:
            raise Refusal(421, f"the request names {text[:100]!r}, not {host} (the host this connection is for)")


def relay(client: Stream, upstream: Stream, bound: list[tuple[bytes, bytes, bytes, str]], swaps: Swaps,
          warn: Callable[[list[str]], object], host: str | None = None) -> tuple[int, int, int, int]:
    """Serve requests from `client` (a Stream) to `upstream` (a Stream) until either side ends.

    Every request must name `host` (same_host). Returns (bytes to upstream,
    bytes to client, requests, swaps made).
    """
    sent = received = requests = swapped = 0
    in_query = swaps.query_by_host.get(host, []) if host is not None else []
    in_body = swaps.body_by_host.get(host, []) if host is not None else []
    while True:
        try:
            head = client.head()
            if head is None:
                break
            first, headers = parse_head(head)
            kind, count = framing(headers)
            if host is not None:
                same_host(headers, first, host)
        except Refusal as e:
            _refuse(client, e.status, str(e))
            client.drain()  # what the client still sends: closing on unread bytes would reset the reply away
            break
        headers, names = swap(headers, bound)
        swapped += len(names)
        to_token = token_path(first)  # (the query swapped below leaves the path as it is)
        if names and to_token:  # a refresh token sent in a header (a Copilot token exchange, EXCHANGES)
            refresh = [swaps.refreshing[n] for n in names if n in swaps.refreshing]
        else:
            refresh = []  # the OAuth credentials this request refreshes (a refresh token swapped into its body)
        if in_query:
            first, names = swap_query(first, in_query)
            swapped += len(names)
        if [v for v in _get(headers, b"expect") if v.lower() == b"100-continue"]:
            client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")  # answered here: the body follows at once
            headers = [(n, v) for n, v in headers if n.lower() != b"expect"]

        # a request to a login's token endpoint that refreshes no stored login: a login made inside (or one
        # from before), whose tokens are taken from the answer and kept on the host
        login = swaps.logins.get(host) if host is not None and first.startswith(b"POST ") and to_token else None

        def build(headers: list[tuple[bytes, bytes]], names: list[str] = (), first: bytes = first,
                  refresh: list[dict] = refresh, login: str | None = login) -> bytes:
            refresh.extend(swaps.refreshing[n] for n in names if n in swaps.refreshing)
            if refresh or login:  # the answer is read and rewritten here: uncompressed, please
                headers = [(n, v) for n, v in headers if n.lower() != b"accept-encoding"]
            out = first + b"\r\n" + b"".join(n + b": " + v + b"\r\n" for n, v in headers) + b"\r\n"
            left = swaps.leftovers(out)
            if left:
                warn(left)
            return out

        here = [b for b in in_body if b[2] not in swaps.token_only or to_token] if in_body else in_body
        asked = []  # a login request's body as it came (its grant_type says what the answer is)
        if (here or login) and kind in ("length", "chunked"):
            n, names = send_swapped_body(client, upstream, build, headers, kind, count, here, seen=asked)
            sent += n
            swapped += len(names)
        else:
            out = build(headers)
            upstream.sendall(out)
            sent += len(out) + copy_body(client, upstream, kind, count)
        requests += 1
        method = first.split(b" ", 1)[0]
        while True:
            rhead = upstream.head(refuse=False)
            if rhead is None:
                return sent, received, requests, swapped
            for placeholder, real, _, _ in bound:  # a value echoed in a response head goes back as its placeholder
                if real in rhead:
                    rhead = rhead.replace(real, placeholder)
            status_line, rheaders = parse_head(rhead, request=False)
            parts = status_line.split(b" ", 2)
            status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
            if not (100 <= status < 200) or status == 101:
                break
            client.sendall(rhead)
            received += len(rhead)
        if status == 101:  # an upgrade (websocket): raw both ways from here
            client.sendall(rhead)
            return _raw(client, upstream, sent, received + len(rhead), requests, swapped)
        if method == b"HEAD" or status in (204, 304):
            rkind, rcount = "none", None
        else:
            rkind, rcount = framing(rheaders, request=False)
        if (refresh or login) and rkind != "none":  # new tokens: sealed on the host, placeholders to the sandbox
            grant = grant_type(asked[0], headers) if asked and not refresh else ""
            keep = (lambda answer, meta=refresh[0]: swaps.refreshed(meta, answer)) if refresh else \
                (lambda answer, fmt=login, grant=grant: swaps.captured(fmt, host, answer, grant))
            answer, passed = answer_refresh(upstream, status_line, rheaders, status, rkind, rcount, keep, bound,
                                            strict=bool(refresh))
            client.sendall(answer)
            received += len(answer)
            if not passed:
                break
        else:
            client.sendall(rhead)
            received += len(rhead) + copy_body(upstream, client, rkind, rcount)
        closing = b"close" in b",".join(_get(headers, b"connection") + _get(rheaders, b"connection")).lower()
        if rkind == "close" or closing or first.endswith(b"HTTP/1.0"):
            break
    return sent, received, requests, swapped


def _read_body(src: Stream, kind: str, count: int | None, limit: int) -> bytes | None:
    """A response body whole, or None past `limit`."""
    if kind == "length":
        return src.read(count) if count <= limit else None
    if kind == "chunked":
        _, body, trailers, _ = _read_chunks(src, limit)
        return body if trailers is not None else None
    while len(src.buf) <= limit:  # "close": to the end
        if not src._fill():
            return src.buf
    return None


def _nested(value: object) -> list[dict]:
    """Every JSON object below the top level of `value`."""
    found, stack = [], list(value.values()) if isinstance(value, dict) else []
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            found.append(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def _holds_tokens(answer: dict) -> bool:
    """Whether a token endpoint's answer carries a token (OAuth 2.0's keys, or a Copilot exchange's `token`)."""
    return any(isinstance(answer.get(k), str) and answer[k]
               for k in ("access_token", "refresh_token", "id_token", "token"))


def answer_refresh(upstream: Stream, status_line: bytes, headers: list[tuple[bytes, bytes]], status: int, kind: str,
                   count: int | None, keep: Callable[[dict], dict[str, str]],
                   bound: list[tuple[bytes, bytes, bytes, str]], strict: bool = True) -> tuple[bytes, bool]:
    """The token endpoint's answer to a refresh or a login, as the sandbox gets it: (response, passed on).

    A 2xx answer with tokens (a JSON object) has them kept on the host by
    `keep` (a refresh: sealed into the stored login, creds.oauth.refreshed;
    a login made inside: the sandbox's record, Swaps.captured), which returns
    {token: new placeholder}; the sandbox gets the placeholders. Anything
    else in a 2xx (compressed, too large, not a JSON object, tokens below
    its top level, no way to keep them; for a refresh, `strict`, also no
    tokens at all) is never passed on: the sandbox gets 502 and the
    connection closes. An answer whose tokens were replaced closes its
    connection too (`Connection: close`): the connection's view of the
    placeholders dates from its start, and the next request may carry the
    new ones. An error answer (no tokens) passes with known values turned
    back into their placeholders.
    """
    body = _read_body(upstream, kind, count, BODY_LIMIT)
    problem, renewed = None, False
    if body is None:
        problem = "the token endpoint's answer is too large"
    elif 200 <= status < 300:
        import json  # lazy: only for a refresh

        coding = b",".join(_get(headers, b"content-encoding")).strip().lower()
        try:
            if coding not in (b"", b"identity"):
                raise ValueError("it is compressed")
            answer = json.loads(body)
            if not isinstance(answer, dict):  # (JSONP, a prefix, a list: where tokens could hide unseen)
                raise ValueError("it is no JSON object")
            if any(_holds_tokens(v) for v in _nested(answer)):
                raise ValueError("it holds tokens below its top level")
            pairs = keep(answer) if _holds_tokens(answer) else {}
            if not pairs and strict:  # a 2xx token answer without the tokens it should carry: nothing known to hide
                raise ValueError("it holds no access_token or refresh_token")
            if pairs:
                body = json.dumps({k: pairs.get(v, v) if isinstance(v, str) else v
                                   for k, v in answer.items()}).encode()
                # the connection's view of the placeholders was read when it opened: the next request, which
                # may carry the new ones, comes on a new connection
                renewed = True
        except Exception as e:  # whatever it is, the tokens in it never reach the sandbox
            problem = f"the token endpoint's answer was not passed on: {str(e)[:200]}"
    if problem is not None:
        msg = f"agentsh: {problem}\n".encode()
        return (b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
                b"X-Agentsh-Policy: error\r\nConnection: close\r\n\r\n%s" % (len(msg), msg)), False
    for placeholder, real, _, _ in bound:
        body = body.replace(real, placeholder)
    drop = (b"content-length", b"transfer-encoding") + ((b"connection",) if renewed else ())
    kept = [(n, v) for n, v in headers if n.lower() not in drop]
    head = status_line + b"\r\n" + b"".join(n + b": " + v + b"\r\n" for n, v in kept)
    if renewed:
        head += b"Connection: close\r\n"
    return head + b"Content-Length: %d\r\n\r\n" % len(body) + body, kind != "close" and not renewed


def _raw(client: Stream, upstream: Stream, sent: int, received: int, requests: int,
         swapped: int) -> tuple[int, int, int, int]:
    counts = [0]

    def down() -> None:
        try:
            counts[0] = upstream.rest(client)
        except (OSError, ValueError, ssl.SSLError):
            pass

    t = threading.Thread(target=down, daemon=True)
    t.start()
    try:
        sent += client.rest(upstream)
    except (OSError, ValueError, ssl.SSLError):
        pass
    t.join(timeout=5)
    return sent, received + counts[0], requests, swapped


# -- contexts ------------------------------------------------------------------------------------


class Contexts:
    """The upstream context (host trust store, plus AGENTSH_UPSTREAM_CA) and one server context per host."""

    def __init__(self, state_root: str, sandbox: str, upstream_ca: str | None = None) -> None:
        self.state_root, self.sandbox = state_root, sandbox
        self.upstream_ca = upstream_ca if upstream_ca is not None else os.environ.get(UPSTREAM_CA_ENV)
        self._upstream = None
        self._servers = {}
        self._lock = threading.Lock()

    def upstream(self) -> ssl.SSLContext:
        if self._upstream is None:
            ctx = ssl.create_default_context()
            if self.upstream_ca:
                ctx.load_verify_locations(self.upstream_ca)
            ctx.set_alpn_protocols(["http/1.1"])
            self._upstream = ctx
        return self._upstream

    def has_ca(self) -> bool:
        """Whether the sandbox's CA exists (made by its ab-up, with the bundle that trusts it)."""
        return os.path.isfile(os.path.join(ca.ca_dir(self.state_root, self.sandbox), ca.CA_CERT))

    def server(self, host: str) -> ssl.SSLContext:
        ctx = self._servers.get(host)
        if ctx is None:
            with self._lock:
                cert, key = ca.leaf(self.state_root, self.sandbox, host)
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                ctx.minimum_version = ssl.TLSVersion.TLSv1_2
                ctx.load_cert_chain(cert, key)
                ctx.set_alpn_protocols(["http/1.1"])
                self._servers[host] = ctx
        return ctx
