"""Attacks on the egress audit log from inside real sandboxes, rootful and rootless.

A refused request's host, method and reason end up in the log and, through
ab-log and ab-net propose, on the user's terminal. The sandbox sends request
heads full of terminal escapes (ESC sequences, BEL, CR, NUL, DEL, 8-bit CSI,
bidi overrides) and oversized, non-UTF-8 fields; what the user's commands
print must hold none of them raw, and the log must stay one JSON line per
attempt.
"""

import json

from tests.security.test_egress_addresses import box  # noqa: F401  (the rootful/rootless fixture)

HOSTILE_HOSTS = [
    b"\x1b]0;owned\x07title.example",  # OSC: set the window title
    b"\x1b[2J\x1b[Hclear.example",  # CSI: clear the screen
    b"\x1b]52;c;cHduZWQ=\x07clip.example",  # OSC 52: write the clipboard
    b"\x1b[31mred\x1b[0m.example",
    b"bell\x07\x07.example",
    b"cr\rDENY-looks-fine.example",
    b"nul\x00byte.example",
    b"del\x7f.example",
    b"csi8\x9b2Jbit.example",  # 8-bit CSI (C1 control)
    b"\xe2\x80\xaebidi.example",  # U+202E RIGHT-TO-LEFT OVERRIDE, as UTF-8 bytes
    b"\xc2\x9b31mc1.example",  # U+009B as UTF-8
    b"lf\nnewline.example",
]


def _unsafe(text):
    """Characters that drive a terminal: C0 but LF, DEL, C1, and bidi/zero-width formatting."""
    return [c for c in text if (ord(c) < 0x20 and c != "\n") or 0x7f <= ord(c) <= 0x9f
            or c in "\u061c\u200b\u200c\u200d\u200e\u200f\u2028\u2029\ufeff"
            or 0x202a <= ord(c) <= 0x202e or 0x2066 <= ord(c) <= 0x2069]


def _raw_unsafe(data):
    """The same, on bytes as a terminal would get them (any ESC, BEL, CR, NUL, DEL, C1 byte or bidi sequence)."""
    bad = [b for b in data if (b < 0x20 and b != 0x0A) or b == 0x7F]
    return bad + _unsafe(data.decode("utf-8", "replace"))


def test_log_escapes_terminal_control_bytes(box):
    box.configure('[network]\nmode = "allow"\nallow = ["@github"]\n')
    requests = [b"CONNECT " + host + b":443 HTTP/1.1\r\n\r\n" for host in HOSTILE_HOSTS]
    requests.append(b"GET http://\x1b]0;owned\x07get.example/ HTTP/1.1\r\n\r\n")
    replies = box.send(requests)
    assert all(r.startswith(b"HTTP/1.1 403") for r in replies), [r[:60] for r in replies]
    text = box.run("ab-log", box.project)
    denied = box.run("ab-log", "--denied", box.project)
    assert text.returncode == 0 and denied.returncode == 0, text.stderr + denied.stderr
    for out in (text.stdout, denied.stdout):
        assert _raw_unsafe(out) == [], out
        lines = out.decode().splitlines()
        assert len(lines) == len(requests) and all("DENY" in line for line in lines)
    shown = text.stdout.decode()
    # (hosts are logged in lower case, as the proxy compares them)
    for escaped in ("\\x1b]0;owned\\x07title.example", "\\x1b[2j\\x1b[hclear.example", "nul\\x00byte.example",
                    "cr\\x0ddeny-looks-fine.example", "del\\x7f.example", "csi8\\x9b2jbit.example",
                    "\\x9b31mc1.example", "lf\\x0anewline.example", "bidi.example"):
        assert escaped in shown, escaped
    # --json stays valid JSON (one list) and keeps what was sent, byte for byte (non-UTF-8 as latin-1).
    proc = box.run("ab-log", "--json", box.project)
    assert _raw_unsafe(proc.stdout) == [] and all(b < 0x80 for b in proc.stdout)
    entries = json.loads(proc.stdout)
    assert [e["host"] for e in entries][:len(HOSTILE_HOSTS)] == [h.decode("latin-1").lower() for h in HOSTILE_HOSTS]
    assert all(e["reason"] == "not a host name or IP address" for e in entries)


def test_net_propose_prints_no_hostile_host(box):
    """Learn mode: ab-net propose turns the log into config text; hostile hosts never make it in."""
    box.configure('[network]\nmode = "learn"\n')
    requests = [b"CONNECT " + host + b":443 HTTP/1.1\r\n\r\n" for host in HOSTILE_HOSTS]
    requests.append(b"CONNECT ok.example:8443 HTTP/1.1\r\n\r\n")  # fails to resolve, but is a fair proposal
    box.send(requests)
    text = box.run("ab-net", "propose", box.project)
    as_json = box.run("ab-net", "propose", "--json", box.project)
    assert text.returncode == 0 and as_json.returncode == 0, text.stderr + as_json.stderr
    assert _raw_unsafe(text.stdout) == [] and _raw_unsafe(as_json.stdout) == []
    listed = text.stdout.decode().split("allow = [\n", 1)[1].split("]", 1)[0]
    assert listed == '    "ok.example:8443",\n'
    proposal = json.loads(as_json.stdout)
    assert proposal["allow"] == ["ok.example:8443"]
    assert [d["host"] for d in proposal["destinations"]] == ["ok.example"]


def test_hostile_request_head_makes_one_sane_log_line(box):
    """Oversized host, port and method, NUL and non-UTF-8 bytes: one short ASCII JSON line per attempt."""
    box.configure('[network]\nmode = "learn"\n')
    requests = [
        b"CONNECT " + b"a" * 30000 + b".example:443 HTTP/1.1\r\n\r\n",
        b"CONNECT long.example:" + b"4" * 20000 + b" HTTP/1.1\r\n\r\n",
        b"GE\x00T" + b"X" * 20000 + b" http://ok.example/ HTTP/1.1\r\n\r\n",
        b"CONNECT \x00\x00\x00:443 HTTP/1.1\r\n\r\n",
        b"CONNECT \xff\xfe\xfd\x80.example:443 HTTP/1.1\r\n\r\n",
        b"CONNECT [::ffff:127.0.0.1\x1b[2J]:443 HTTP/1.1\r\n\r\n",
        b"CONNECT " + b"\x1b" * 5000 + b":443 HTTP/1.1\r\n\r\n",
    ]
    replies = box.send(requests)
    assert all(r.startswith((b"HTTP/1.1 400", b"HTTP/1.1 403")) and len(r) < 2000 for r in replies), \
        [r[:80] for r in replies]
    box.note_proxy()
    with open(box.log_path(), "rb") as f:
        raw = f.read()
    lines = raw.split(b"\n")
    assert lines[-1] == b"" and len(lines) - 1 == len(requests)
    entries = []
    for line in lines[:-1]:
        assert all(0x20 <= b < 0x7F for b in line) and len(line) < 2000, line[:120]
        entries.append(json.loads(line))
    assert all(not e["allowed"] for e in entries)
    assert entries[0]["host"].startswith("a" * 255 + "...(") and entries[0]["reason"] == "host name too long"
    assert entries[1]["reason"] == "bad request: bad port '4444444444444444'"
    assert entries[2]["reason"] == "bad request: not an HTTP method"
    assert entries[3]["host"] == "\x00\x00\x00" and entries[4]["host"] == "\xff\xfe\xfd\x80.example"
    assert entries[5]["reason"] == "not a host name or IP address"
    assert entries[6]["host"].startswith("\x1b" * 255 + "...(")
    shown = box.run("ab-log", box.project)
    assert shown.returncode == 0 and _raw_unsafe(shown.stdout) == []
    assert max(len(line) for line in shown.stdout.splitlines()) < 3000
