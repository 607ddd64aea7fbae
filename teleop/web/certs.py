"""Self-signed TLS certificate for the teleop web server (WebXR needs a secure context).

Made once on first run and reused; the headset's browser asks the operator to accept it once
(see docs/teleop.md). The key never leaves ``cert_dir`` (mode 0600).
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
from pathlib import Path


def _lan_addresses() -> list[str]:
    addrs = {"127.0.0.1"}
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
            addrs.add(s.getsockname()[0])
    except OSError:
        pass
    return sorted(addrs)


def ensure_certificate(cert_dir: str | Path) -> tuple[Path, Path]:
    """Return (cert.pem, key.pem) in ``cert_dir``, generating a self-signed pair if missing."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    d = Path(cert_dir).expanduser()
    cert_path, key_path = d / "cert.pem", d / "key.pem"
    if cert_path.is_file() and key_path.is_file():
        return cert_path, key_path
    d.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    host = socket.gethostname()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"hil_robot teleop ({host})")])
    sans: list[x509.GeneralName] = [x509.DNSName("localhost"), x509.DNSName(host)]
    sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in _lan_addresses()]
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=825))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_path.touch(mode=0o600)
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def server_ssl_context(cert_dir: str | Path) -> ssl.SSLContext:
    cert, key = ensure_certificate(cert_dir)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return ctx
