"""SHA-256 without importing hashlib's OpenSSL binding (~9 ms) on hot paths."""

from __future__ import annotations

try:  # CPython's built-in implementation, cheap to import
    from _sha256 import sha256
except ImportError:  # pragma: no cover - other interpreters, Python 3.12+
    try:
        from _sha2 import sha256
    except ImportError:
        from hashlib import sha256


def sha256_hex(data: bytes | str) -> str:
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogateescape")
    return sha256(data).hexdigest()
