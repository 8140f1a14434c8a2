"""A local HTTPS "API" with its own test CA, recording what reached it (credential interception tests)."""

import datetime
import ipaddress
import json
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(directory, names):
    """A test CA and a server certificate for `names` (DNS names or IPs); returns (ca.pem, cert.pem, key.pem)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("agentsh test CA")).issuer_name(_name("agentsh test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    alts = []
    for n in names:
        try:
            alts.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            alts.append(x509.DNSName(n))
    cert = (x509.CertificateBuilder().subject_name(_name(names[0])).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName(alts), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = [directory / "test-ca.pem", directory / "origin.pem", directory / "origin.key"]
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return tuple(str(p) for p in paths)


class Echo(BaseHTTPRequestHandler):
    """Answers every request with JSON: method, path, headers, body (chunked bodies decoded), connection count."""

    protocol_version = "HTTP/1.1"

    def _body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b""):
                        pass
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _answer(self):
        body = self._body()
        seen = {"method": self.command, "path": self.path, "headers": dict(self.headers.items()),
                "body": body.decode("latin-1"), "peer": id(self.connection)}
        self.server.seen.append(seen)
        data = json.dumps(seen).encode() if self.server.reflect else f"seen {len(self.server.seen)}\n".encode()
        token_endpoint = "/oauth/token" in self.path or self.path.split("?")[0] in (
            "/token", "/copilot_internal/v2/token")  # Google's: /token; GitHub's Copilot token exchange
        if token_endpoint and self.server.tokens is not None:  # a token endpoint: new tokens
            time.sleep(self.server.token_delay)  # a slow one: other commands start while a refresh is under way
            data = json.dumps(self.server.tokens).encode()
        self.send_response(200)
        if self.path.startswith("/echo-header"):  # an API that reflects the key in a response header
            self.send_header("X-Seen-Key", self.headers.get("x-api-key", ""))
        if self.path.startswith("/chunked"):
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(0, len(data), 7):
                piece = data[i:i + 7]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = _answer

    def log_message(self, *args):
        pass


class TLSOrigin:
    """An HTTPS server on `bind` with the test CA's certificate for `names`.

    `reflect`: answer with what was received (headers included); else only a count,
    so the value the proxy added never travels back into a sandbox.
    """

    def __init__(self, directory, names, bind="127.0.0.1", reflect=True):
        self.ca, cert, key = make_ca(directory, names)
        self.server = ThreadingHTTPServer((bind, 0), Echo)
        self.server.daemon_threads = True
        self.server.seen = []
        self.server.reflect = reflect
        self.server.token_delay = 0
        self.server.tokens = None  # set: .../oauth/token and /token answer with this JSON (OAuth token endpoints)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        ctx.set_alpn_protocols(["http/1.1"])  # it speaks nothing else (a client offering h2 gets 1.1)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.seen = self.server.seen
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
