"""Connections steered to the proxy without the program's cooperation: where they were going, what they say.

The sandbox's network namespace has a local route for the synthetic block
(egress.dns.SYNTHETIC) and an nat OUTPUT rule redirecting TCP to it onto the
proxy's transparent listener (egress.network.plant_listener). On such a
connection `original_dst` gives the address and port the program connected
to; the address names the host (the DNS answerer's map). `sniff` reads the
first bytes the client sends, the TLS ClientHello or the HTTP request head,
and returns the name they carry (SNI, Host), which must be that same host.
"""

import socket
import struct

SO_ORIGINAL_DST = 80
FIRST_WAIT = 1.0  # seconds to wait for a client's first bytes (a server-first protocol sends none)
READ_TIMEOUT = 10
TLS_LIMIT = 5 + (1 << 14)  # one TLS record
HTTP_LIMIT = 64 * 1024
_METHODS = (b"GET ", b"HEAD ", b"POST ", b"PUT ", b"DELETE ", b"OPTIONS ", b"PATCH ", b"TRACE ", b"CONNECT ",
            b"PROPFIND ")


def original_dst(sock: socket.socket) -> tuple[str, int]:
    """(address, port) the client connected to before the REDIRECT rule; ValueError when there was none."""
    try:
        raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    except OSError as e:
        raise ValueError(f"no original destination ({e.strerror})") from None
    port = struct.unpack("!H", raw[2:4])[0]
    return socket.inet_ntoa(raw[4:8]), port


def sniff(sock: socket.socket) -> tuple[str, str | None, bytes]:
    """(kind, name or None, bytes read) from the client's first bytes.

    kind: "TLS" (name: its SNI, None when it sends none), an HTTP method
    (name: the Host header's host), or "TCP" (anything else, or nothing
    within FIRST_WAIT). ValueError for a ClientHello or head that cannot be
    read (cut off, malformed, too large): the proxy refuses those rather
    than guess.
    """
    sock.settimeout(FIRST_WAIT)
    try:
        buf = sock.recv(65536)
    except (socket.timeout, BlockingIOError):
        return "TCP", None, b""
    sock.settimeout(READ_TIMEOUT)
    if not buf:
        return "TCP", None, b""
    if buf[0] == 0x16:
        while len(buf) < 5 or len(buf) < 5 + struct.unpack("!H", buf[3:5])[0]:
            if len(buf) >= TLS_LIMIT:
                break
            chunk = sock.recv(65536)
            if not chunk:
                raise ValueError("connection closed inside the TLS ClientHello")
            buf += chunk
        return "TLS", client_hello_sni(buf), buf
    if buf.startswith(_METHODS) or any(m.startswith(buf) for m in _METHODS):
        while b"\r\n\r\n" not in buf:
            if len(buf) > HTTP_LIMIT:
                raise ValueError("HTTP request head too large")
            chunk = sock.recv(65536)
            if not chunk:
                raise ValueError("connection closed inside the HTTP request head")
            buf += chunk
        method = buf.split(b" ", 1)[0].decode("latin-1")
        return method, http_host(buf), buf
    return "TCP", None, buf


def client_hello_sni(data: bytes) -> str | None:
    """The server_name of a TLS ClientHello (bytes from the record header on); None when it has none."""
    try:
        if data[0] != 0x16 or data[5] != 0x01:
            raise ValueError("not a TLS ClientHello")
        record_len = struct.unpack("!H", data[3:5])[0]
        hs_len = int.from_bytes(data[6:9], "big")
        body = data[9:5 + record_len]
        if hs_len > len(body):
            raise ValueError("TLS ClientHello spans several records")
        body = body[:hs_len]
        pos = 2 + 32  # client_version, random
        pos += 1 + body[pos]  # session id
        pos += 2 + struct.unpack("!H", body[pos:pos + 2])[0]  # cipher suites
        pos += 1 + body[pos]  # compression methods
        if pos == len(body):
            return None  # no extensions
        end = pos + 2 + struct.unpack("!H", body[pos:pos + 2])[0]
        if end > len(body):
            raise ValueError("cut-off extensions")
        pos += 2
        while pos + 4 <= end:
            kind, length = struct.unpack("!HH", body[pos:pos + 4])
            pos += 4
            if kind == 0:  # server_name
                ext = body[pos:pos + length]
                list_len = struct.unpack("!H", ext[:2])[0]
                p = 2
                while p + 3 <= 2 + list_len:
                    name_type, name_len = ext[p], struct.unpack("!H", ext[p + 1:p + 3])[0]
                    if name_type == 0:
                        return ext[p + 3:p + 3 + name_len].decode("ascii")
                    p += 3 + name_len
                return None
            pos += length
        return None
    except (IndexError, struct.error, UnicodeDecodeError) as e:
        raise ValueError(f"malformed TLS ClientHello ({e.__class__.__name__})") from None


def http_host(head: bytes) -> str | None:
    """The host of an HTTP request head's Host header (port dropped), or None without one."""
    for line in head.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"host":
            text = value.strip().decode("latin-1")
            if text.startswith("["):
                return text[1:text.find("]")] if "]" in text else text
            return text.rsplit(":", 1)[0] if text.count(":") == 1 else text
    return None
