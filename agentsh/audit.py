"""The egress audit log: one JSON object per connection attempt, appended to a file.

Each line holds: time (UTC, ISO 8601), sandbox, host, port, method
("CONNECT" or the HTTP method), allowed (true/false), reason (the rule that
allowed it, "learn", or why it was refused), bytes_sent (sandbox -> host),
bytes_received, ms (connection lifetime). A denied attempt is written when it
is refused, an allowed one when its connection closes. The file lives in the
state dir (net/log/<sandbox>.jsonl); past MAX_BYTES it is renamed to
`.1` (one generation kept) so a chatty agent cannot fill the disk.
"""

import json
import os
import threading
import time

MAX_BYTES = 20 * 1024 * 1024
KEYS = ("time", "sandbox", "host", "port", "method", "allowed", "reason", "bytes_sent", "bytes_received", "ms")


def now_iso(ts=None):
    ts = time.time() if ts is None else ts
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"


class Writer:
    """Appends entries; one write(2) per line on an O_APPEND descriptor, so lines never interleave."""

    def __init__(self, path, max_bytes=MAX_BYTES):
        self.path = path
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._fd = None

    def _open(self):
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def write(self, entry):
        line = (json.dumps(entry, separators=(",", ":")) + "\n").encode()
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

    def close(self):
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def parse_line(line):
    """An entry dict, or None for a torn or foreign line (never an error)."""
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    return entry if isinstance(entry, dict) and "host" in entry else None


def read(path, denied_only=False):
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


def follow(path, denied_only=False, poll=0.2, stop=None):
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


def _size(path):
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


def _inode(path):
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:
        return None


def format_entry(e):
    """One human line: time, ALLOW/DENY, host:port, method, bytes, reason."""
    verdict = "ALLOW" if e.get("allowed") else "DENY "
    host = str(e.get("host", ""))
    dest = f"[{host}]:{e.get('port')}" if ":" in host else f"{host}:{e.get('port')}"
    size = f"{e.get('bytes_sent', 0)}B out / {e.get('bytes_received', 0)}B in" if e.get("allowed") else ""
    return f"{e.get('time', '')}  {verdict}  {dest:<40} {e.get('method', ''):<7} {size:<28} {e.get('reason', '')}".rstrip()
