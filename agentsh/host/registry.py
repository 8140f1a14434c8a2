"""A client of the OCI distribution API (GET manifests and blobs), for what agentsh fetches from registries.

Standard library only: urllib over an ssl context holding the host's trust
store and, when given, agentsh's checked CA bundle (config `ca_bundle`), so
a registry behind a TLS-intercepting proxy verifies as it does for the
image builder. Anonymous pulls: a 401 whose WWW-Authenticate names a Bearer
realm is answered with the realm's token (as ghcr.io, Docker Hub and quay.io
want), once.

HTTPS always, except for a registry on loopback (127.0.0.0/8, ::1,
localhost), which is tried over HTTPS and then over plain HTTP, as Docker
treats such registries. A redirect (registries send blobs to a CDN) is
followed by hand: never from HTTPS to plain HTTP off loopback, and the
token never goes to another host. Every response is read up to a limit.
Nothing here trusts what it fetched: callers check digests.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request

from agentsh.base.errors import AgentshError

TYPE_CHECKING = False  # typing stays off the hot paths
if TYPE_CHECKING:
    from collections.abc import Mapping
    from email.message import Message

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MAX_MANIFEST = 4 << 20  # the distribution spec's suggested limit
MAX_TOKEN = 64 << 10
TIMEOUT = 30
MAX_REDIRECTS = 5


class RegistryError(AgentshError):
    """A registry could not give what was asked; `kind` says how: unreachable, missing, denied, bad."""

    def __init__(self, kind: str, message: str, fix: str | None = None) -> None:
        super().__init__(message, fix)
        self.kind = kind


def is_loopback(host: str) -> bool:
    """Whether a registry host (no port) is this machine's loopback: localhost, 127.0.0.0/8, ::1."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(addr, "ipv4_mapped", None)  # ::ffff:127.0.0.1 (ipaddress does not call it loopback)
    return addr.is_loopback or bool(mapped and mapped.is_loopback)


def split_host(registry: str) -> tuple[str, int | None]:
    """("127.0.0.1", 5000) of "127.0.0.1:5000"; ("::1", 5000) of "[::1]:5000"."""
    if registry.startswith("["):
        host, _, rest = registry[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else None
    host, _, port = registry.partition(":")
    return host, int(port) if port.isdigit() else None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req: urllib.request.Request, fp: object, code: int, msg: str,
                         headers: Message, newurl: str) -> None:
        return None  # a 3xx comes back as an HTTPError; Registry._get follows it by its rules


class Registry:
    """One registry (`host[:port]`), spoken to with the rules above.

    `cafile`: a PEM bundle trusted besides the host's store (agentsh's checked copy of config ca_bundle).
    """

    def __init__(self, registry: str, cafile: str | None = None, timeout: float = TIMEOUT) -> None:
        self.registry = registry
        self.host, _ = split_host(registry)
        self.loopback = is_loopback(self.host)
        self.timeout = timeout
        self.scheme = "https"
        self.token = None
        context = ssl.create_default_context()
        if cafile:
            try:
                context.load_verify_locations(cafile=cafile)
            except (OSError, ssl.SSLError) as e:
                raise RegistryError("bad", f"cannot read the CA bundle {cafile} ({e})",
                                    "fix config 'ca_bundle'") from None
        handlers = [urllib.request.HTTPSHandler(context=context), _NoRedirect()]
        self.opener = urllib.request.build_opener(*handlers)
        # A loopback registry is reached directly, whatever the proxy variables say.
        self.direct = urllib.request.build_opener(urllib.request.ProxyHandler({}), *handlers)

    # -- the API ------------------------------------------------------------------------------

    def manifest(self, repository: str, reference: str) -> tuple[bytes, str, str | None]:
        """(bytes, media type, Docker-Content-Digest or None) of a manifest, by tag or digest."""
        status, headers, body = self._get(f"/v2/{repository}/manifests/{reference}", repository,
                                          {"Accept": OCI_MANIFEST}, MAX_MANIFEST)
        return body, (headers.get("Content-Type") or "").split(";")[0].strip(), headers.get("Docker-Content-Digest")

    def blob(self, repository: str, digest: str, limit: int) -> bytes:
        """A blob's bytes (at most `limit`)."""
        return self._get(f"/v2/{repository}/blobs/{digest}", repository, {}, limit)[2]

    # -- requests -----------------------------------------------------------------------------

    def _url(self, path: str) -> str:
        return f"{self.scheme}://{self.registry}{path}"

    def _get(self, path: str, repository: str, headers: Mapping[str, str], limit: int) -> tuple[int, Message, bytes]:
        url = self._url(path)
        try:
            return self._follow(url, repository, headers, limit)
        except _TLSFailed:
            if not self.loopback:
                raise
            self.scheme = "http"  # a loopback registry without TLS, as Docker allows
            return self._follow(self._url(path), repository, headers, limit)

    def _follow(self, url: str, repository: str, headers: Mapping[str, str], limit: int,
                authed: bool = False) -> tuple[int, Message, bytes]:
        origin = urllib.parse.urlsplit(url).netloc
        for _ in range(MAX_REDIRECTS + 1):
            parts = urllib.parse.urlsplit(url)
            send = dict(headers)
            if self.token and parts.netloc == origin:
                send["Authorization"] = f"Bearer {self.token}"
            status, got, body = self._once(url, send, limit)
            if status in (301, 302, 303, 307, 308) and got.get("Location"):
                url = urllib.parse.urljoin(url, got["Location"])
                self._check_scheme(url)
                continue
            if status == 401 and not authed and self._authenticate(got, repository):
                return self._follow(url, repository, headers, limit, authed=True)
            if status == 200:
                return status, got, body
            raise self._error(status, body, authed)
        raise RegistryError("bad", f"registry {self.registry}: more than {MAX_REDIRECTS} redirects",
                            "check the registry name")

    def _check_scheme(self, url: str) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme == "https" or (parts.scheme == "http" and is_loopback(parts.hostname or "")):
            return
        raise RegistryError("bad", f"registry {self.registry} redirected to {parts.scheme}://{parts.netloc}, "
                                   "which is not HTTPS", "use a registry that serves HTTPS")

    def _once(self, url: str, headers: Mapping[str, str], limit: int) -> tuple[int, Message, bytes]:
        parts = urllib.parse.urlsplit(url)
        opener = self.direct if is_loopback(parts.hostname or "") else self.opener
        request = urllib.request.Request(url, headers={"User-Agent": "agentsh", **headers})
        try:
            response = opener.open(request, timeout=self.timeout)
        except urllib.error.HTTPError as e:
            with e:
                return e.code, e.headers, _read(e, min(limit, 64 << 10), self.registry)
        except urllib.error.URLError as e:
            reason = e.reason
            if isinstance(reason, ssl.SSLError) and not isinstance(reason, ssl.SSLCertVerificationError):
                raise _TLSFailed("unreachable", f"registry {self.registry}: TLS failed ({reason})",
                                 "check the registry name and the network") from None
            if isinstance(reason, ssl.SSLCertVerificationError):
                raise RegistryError("unreachable", f"registry {self.registry}: its certificate failed the checks "
                                    f"({reason.verify_message})",
                                    "behind a TLS-intercepting proxy, set config 'ca_bundle' to a bundle "
                                    "holding its CA") from None
            raise RegistryError("unreachable", f"registry {self.registry} cannot be reached ({_why(reason)})",
                                "check the registry name and the network") from None
        except (TimeoutError, socket.timeout):
            raise RegistryError("unreachable", f"registry {self.registry} did not answer in {self.timeout:g} s",
                                "check the registry name and the network") from None
        except (OSError, ValueError) as e:  # a reset connection, a malformed URL
            if isinstance(e, ssl.SSLError):
                raise _TLSFailed("unreachable", f"registry {self.registry}: TLS failed ({e})",
                                 "check the registry name and the network") from None
            raise RegistryError("unreachable", f"registry {self.registry} cannot be reached ({_why(e)})",
                                "check the registry name and the network") from None
        with response:
            return response.status, response.headers, _read(response, limit, self.registry)

    def _authenticate(self, headers: Message, repository: str) -> bool:
        """Get an anonymous token from the Bearer realm a 401 names; False when there is none to get."""
        challenge = parse_challenge(headers.get("WWW-Authenticate") or "")
        if challenge is None or not challenge.get("realm"):
            return False
        realm = challenge["realm"]
        self._check_scheme(realm)
        query = {"service": challenge.get("service", ""), "scope": challenge.get("scope") or
                 f"repository:{repository}:pull"}
        url = realm + ("&" if "?" in realm else "?") + urllib.parse.urlencode({k: v for k, v in query.items() if v})
        status, _, body = self._once(url, {}, MAX_TOKEN)
        if status != 200:
            raise RegistryError("denied", f"registry {self.registry} gave no anonymous token (HTTP {status})",
                                "agentsh fetches public features only; install a private one in a Dockerfile")
        try:
            data = json.loads(body)
            token = data.get("token") or data.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token or any(c in token for c in "\r\n"):
            raise RegistryError("bad", f"registry {self.registry}: its token answer is malformed",
                                "check the registry name")
        self.token = token
        return True

    def _error(self, status: int, body: bytes, authed: bool) -> RegistryError:
        code = ""
        try:
            errors = json.loads(body).get("errors") or []
            code = str(errors[0].get("code", "")) if errors and isinstance(errors[0], dict) else ""
        except (ValueError, AttributeError):
            pass
        if status == 404:
            what = "repository" if code == "NAME_UNKNOWN" else "blob" if code == "BLOB_UNKNOWN" else "manifest"
            return RegistryError("missing", f"registry {self.registry} has no such {what} "
                                 f"(HTTP 404{' ' + code if code else ''})", "check the feature's name and version")
        if status in (401, 403):
            return RegistryError("denied", f"registry {self.registry} refused access (HTTP {status}"
                                 f"{' ' + code if code else ''})",
                                 "agentsh fetches public features only; install a private one in a Dockerfile")
        return RegistryError("bad", f"registry {self.registry} answered HTTP {status}{' ' + code if code else ''}",
                             "try again later, or check the registry name")


class _TLSFailed(RegistryError):
    """TLS itself failed (not the certificate checks): a loopback registry may speak plain HTTP."""


def _why(reason: object) -> str:
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason) or type(reason).__name__


def _read(response: object, limit: int, registry: str) -> bytes:
    data = response.read(limit + 1)
    if len(data) > limit:
        raise RegistryError("bad", f"registry {registry}: an answer larger than {limit} bytes",
                            "check the registry name and the feature's reference")
    return data


def parse_challenge(value: str) -> dict[str, str] | None:
    """The parameters of a `Bearer realm="...",service="...",scope="..."` challenge; None if it is not Bearer."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    out, i, n = {}, 0, len(rest)
    while i < n:
        while i < n and rest[i] in " ,":
            i += 1
        eq = rest.find("=", i)
        if eq < 0:
            break
        key = rest[i:eq].strip().lower()
        i = eq + 1
        if i < n and rest[i] == '"':
            j, chars = i + 1, []
            while j < n and rest[j] != '"':
                if rest[j] == "\\" and j + 1 < n:
                    j += 1
                chars.append(rest[j])
                j += 1
            out[key], i = "".join(chars), j + 1
        else:
            j = rest.find(",", i)
            j = n if j < 0 else j
            out[key], i = rest[i:j].strip(), j
    return out
