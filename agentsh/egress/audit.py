"""The egress audit log: one JSON object per connection attempt, appended to a file.

Each line holds: time (UTC, ISO 8601), sandbox, host, port, method
("CONNECT" or the HTTP method), allowed (true/false), reason (the rule that
allowed it, "learn", or why it was refused), bytes_sent (sandbox -> host),
bytes_received, ms (connection lifetime). A denied attempt is written when it
is refused, an allowed one when its connection closes. The file lives in the
state dir (net/log/<sandbox>.jsonl); past MAX_BYTES it is renamed to
`.1` (one generation kept) so a chatty agent cannot fill the disk.

Host, method and reason come from the sandbox's request and may hold
anything: each line is ASCII JSON (control and non-ASCII characters
escaped), its text fields are cut at LIMITS, and format_entry escapes
control characters and bidi overrides, so printing an entry cannot drive
the terminal.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time

TYPE_CHECKING = False  # typing stays off the paths that import this module
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping
    from typing import Any

MAX_BYTES = 20 * 1024 * 1024
KEYS = ("time", "sandbox", "host", "port", "method", "allowed", "reason", "bytes_sent", "bytes_received", "ms")
# Longest text kept per field; longer values are cut and say how long they were.
LIMITS = {"host": 255, "method": 32, "reason": 512, "sandbox": 255}


def now_iso(ts: float | None = None) -> str:
    ts = time.time() if ts is None else ts
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"


class Writer:
    """Appends entries; one write(2) per line on an O_APPEND descriptor, so lines never interleave."""

    def __init__(self, path: str, max_bytes: int = MAX_BYTES) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._fd = None

    def _open(self) -> None:
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def write(self, entry: Mapping[str, Any]) -> None:
        line = (ascii_json(clipped(entry)) + "\n").encode()
        with self._lock:
            if self._fd is None:
                self._open()
            if os.fstat(self._fd).st_size + len(line) > self.max_bytes:
                os.close(self._fd)
                os.replace(self.path, self.path + ".1")
                self._open()
            elif not os.path.exists(self.path):  # removed by the user: start a new file
                os.close(self._fd)
                self._open()
            os.write(self._fd, line)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def ascii_json(obj: object, indent: int | None = None) -> str:
    """JSON in printable ASCII: json.dumps escapes control and non-ASCII characters, this DEL too."""
    separators = (",", ":") if indent is None else None
    return json.dumps(obj, indent=indent, separators=separators).replace("\x7f", "\\u007f")


def clipped(entry: Mapping[str, Any]) -> Mapping[str, Any]:
    """The entry with its text fields cut at LIMITS (a copy when one was cut)."""
    for key, limit in LIMITS.items():
        value = entry.get(key)
        if isinstance(value, str) and len(value) > limit:
            entry = {**entry, key: f"{value[:limit]}...({len(value)} characters)"}
    return entry


def parse_line(line: str | bytes) -> dict[str, Any] | None:
    """An entry dict, or None for a torn or foreign line (never an error)."""
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    return entry if isinstance(entry, dict) and "host" in entry else None


def read(path: str, denied_only: bool = False) -> list[dict[str, Any]]:
    """Entries of a log (the rotated generation first), oldest first."""
    out = []
    for p in (path + ".1", path):
        try:
            with open(p, "rb") as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            continue
        for line in lines:
            entry = parse_line(line)
            if entry is not None and not (denied_only and entry.get("allowed")):
                out.append(entry)
    return out


def follow(path: str, denied_only: bool = False, poll: float = 0.2,
           stop: Callable[[], bool] | None = None) -> Iterator[dict[str, Any]]:
    """Yield entries appended to a log from now on (a rotation or a new file is followed)."""
    pos = _size(path)
    inode = _inode(path)
    pending = b""
    while stop is None or not stop():
        if _inode(path) != inode:
            inode, pos, pending = _inode(path), 0, b""
        size = _size(path)
        if size < pos:
            pos = 0
        if size > pos:
            with open(path, "rb") as f:
                f.seek(pos)
                data = f.read(size - pos)
            pos += len(data)
            *lines, pending = (pending + data).split(b"\n")
            for line in lines:
                entry = parse_line(line)
                if entry is not None and not (denied_only and entry.get("allowed")):
                    yield entry
        else:
            time.sleep(poll)


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


def _inode(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:
        return None


_UNSAFE = None


def printable(value: object) -> str:
    """str(value) safe to print on a terminal: control characters and bidi overrides escaped.

    C0 (ESC, BEL, CR, LF, ...), DEL, C1 (U+0080-U+009F: 8-bit CSI and
    friends), line and paragraph separators, zero-width and bidi formatting
    characters (U+061C, U+200B-U+200F, U+202A-U+202E, U+2060-U+2069, U+FEFF)
    become \\xHH or \\uHHHH; a backslash becomes two, so the result is
    unambiguous.
    """
    global _UNSAFE
    if _UNSAFE is None:
        _UNSAFE = re.compile(r"[\\\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")
    return _UNSAFE.sub(_escape, str(value))


def _escape(match: re.Match[str]) -> str:
    c = match.group()
    if c == "\\":
        return "\\\\"
    return f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}"


def format_entry(e: Mapping[str, Any]) -> str:
    """One human line: time, ALLOW/DENY, host:port, method, bytes, reason (every field escaped: printable)."""
    verdict = "WARN " if e.get("warning") else "ALLOW" if e.get("allowed") else "DENY "
    host = printable(e.get("host", ""))
    port = printable(e.get("port"))
    dest = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    size = (f"{printable(e.get('bytes_sent', 0))}B out / {printable(e.get('bytes_received', 0))}B in"
            if e.get("allowed") else "")
    return (f"{printable(e.get('time', ''))}  {verdict}  {dest:<40} {printable(e.get('method', '')):<7} {size:<28} "
            f"{printable(e.get('reason', ''))}").rstrip()
