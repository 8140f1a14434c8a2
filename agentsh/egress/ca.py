"""A sandbox's interception CA: made once on the host, its key never leaves the state dir.

`net/ca/<sandbox>/` (mode 0700) holds ca.crt (the certificate the sandbox's
CA bundle adds, sandbox.spec), ca.key and leaf.key (0600, never mounted), and
one leaf certificate per bound host the proxy has served (`leaf-<host>.crt`,
made on first use and reused). EC P-256 throughout: a key costs a
millisecond. `cryptography` is imported only to make a key or a certificate.
"""

from __future__ import annotations

import datetime
import ipaddress
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agentsh.base import layout

CA_CERT, CA_KEY, LEAF_KEY = "ca.crt", "ca.key", "leaf.key"
VALID_DAYS = 3650
LEAF_DAYS = 397


def ca_dir(state_root: str, sandbox: str) -> str:
    return os.path.join(state_root, layout.sandbox_ca(sandbox))


def _write_private(path: str, data: bytes, mode: int = 0o600) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "agentsh"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def ensure(state_root: str, sandbox: str) -> str:
    """Path of the sandbox's CA certificate, making the CA on first use."""
    d = ca_dir(state_root, sandbox)
    cert = os.path.join(d, CA_CERT)
    if os.path.isfile(cert):
        return cert
    os.makedirs(d, mode=0o700, exist_ok=True)
    os.chmod(d, 0o700)
    key = _key()
    now = datetime.datetime.now(datetime.timezone.utc)
    name = _name(f"agentsh sandbox {sandbox}"[:64])
    built = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
             .serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(days=1))
             .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
             .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
             .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                          content_commitment=False, key_encipherment=False,
                                          data_encipherment=False, key_agreement=False, encipher_only=False,
                                          decipher_only=False), critical=True)
             .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
             .sign(key, hashes.SHA256()))
    _write_private(os.path.join(d, CA_KEY), _pem_key(key))
    _write_private(os.path.join(d, LEAF_KEY), _pem_key(_key()))
    _write_private(cert, built.public_bytes(serialization.Encoding.PEM), 0o644)
    return cert


def leaf(state_root: str, sandbox: str, host: str) -> tuple[str, str]:
    """(certificate path, key path) for `host`, signed by the sandbox's CA (made once, then reused).

    The CA itself is made only by ensure() (the sandbox's ab-up, whose bundle
    trusts it): with none, FileNotFoundError, never a new CA the sandbox
    would not trust (a proxy outliving its removed sandbox must not remake one).
    """
    d = ca_dir(state_root, sandbox)
    key_path = os.path.join(d, LEAF_KEY)
    path = os.path.join(d, f"leaf-{host}.crt")
    if os.path.isfile(path):
        return path, key_path
    with open(os.path.join(d, CA_KEY), "rb") as f:
        ca_key = serialization.load_pem_private_key(f.read(), None)
    with open(os.path.join(d, CA_CERT), "rb") as f:
        ca_cert = x509.load_pem_x509_certificate(f.read())
    with open(key_path, "rb") as f:
        leaf_key = serialization.load_pem_private_key(f.read(), None)
    try:
        alt = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        alt = x509.DNSName(host)
    now = datetime.datetime.now(datetime.timezone.utc)
    built = (x509.CertificateBuilder().subject_name(_name(host[:64])).issuer_name(ca_cert.subject)
             .public_key(leaf_key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(days=1))
             .not_valid_after(now + datetime.timedelta(days=LEAF_DAYS))
             .add_extension(x509.SubjectAlternativeName([alt]), critical=False)
             .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
             .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
             .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                            critical=False)
             .sign(ca_key, hashes.SHA256()))
    _write_private(path, built.public_bytes(serialization.Encoding.PEM), 0o644)
    return path, key_path
