"""ZMQ CURVE keys for endpoints that cross machines (DESIGN §5).

``hil-robot keys dir=keys names=server,client`` writes zmq.auth certificate files::

    keys/public/<name>.key          public key (share it)
    keys/private/<name>.key_secret  key pair (keep it on the machine that owns it, mode 0600)

A CURVE *server* (whatever binds: policy server, weight publisher, transition receiver) loads its
own ``private/<name>.key_secret`` and accepts only clients whose public key is in ``public/``
(read at start-up: remove a file there and restart the server to revoke that client). A CURVE
*client* loads its own key pair and the server's ``public/server.key``. Peers without an
authorised key never get a message through.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

log = logging.getLogger(__name__)


class KeyFileError(FileNotFoundError):
    """A missing or unreadable key file; the message says which command makes it."""


def generate_keys(keys_dir: str | os.PathLike, names: list[str] | tuple[str, ...] = ("server", "client"),
                  overwrite: bool = False) -> list[Path]:
    """Create a CURVE key pair per name; return the paths written. Refuses to overwrite unless asked."""
    root = Path(keys_dir)
    pub, priv = root / "public", root / "private"
    pub.mkdir(parents=True, exist_ok=True)
    priv.mkdir(parents=True, exist_ok=True)
    os.chmod(priv, 0o700)
    written = []
    for name in names:
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"key name {name!r} must be a plain file name like 'server' or 'robot1'")
        if (priv / f"{name}.key_secret").exists() and not overwrite:
            raise FileExistsError(f"{priv / (name + '.key_secret')} exists; pass overwrite=true to replace it")
        public_file, secret_file = zmq.auth.create_certificates(str(priv), name)
        os.replace(public_file, pub / f"{name}.key")
        os.chmod(secret_file, 0o600)
        written += [pub / f"{name}.key", Path(secret_file)]
    return written


@dataclasses.dataclass
class CurveKeys:
    """Loaded CURVE material for one endpoint role."""

    public: bytes
    secret: bytes
    server_public: bytes | None = None  # clients: the server's public key
    authorized_dir: str = ""  # servers: folder of authorised client public keys

    @classmethod
    def for_server(cls, keys_dir: str | os.PathLike, name: str = "server") -> "CurveKeys":
        root = Path(keys_dir)
        public, secret = _load_secret(root, name or "server")
        auth_dir = root / "public"
        if not auth_dir.is_dir() or not any(auth_dir.glob("*.key")):
            raise KeyFileError(f"no authorised public keys in {auth_dir}; run `hil-robot keys dir={root}`")
        return cls(public=public, secret=secret, authorized_dir=str(auth_dir))

    @classmethod
    def for_client(cls, keys_dir: str | os.PathLike, name: str = "client", server: str = "server") -> "CurveKeys":
        root = Path(keys_dir)
        public, secret = _load_secret(root, name or "client")
        server_file = root / "public" / f"{server}.key"
        if not server_file.is_file():
            raise KeyFileError(f"missing server public key {server_file}; copy public/{server}.key from the server's keys dir")
        server_public, _ = zmq.auth.load_certificate(str(server_file))
        return cls(public=public, secret=secret, server_public=server_public)

    def apply_server(self, sock: zmq.Socket) -> None:
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        sock.curve_server = True

    def apply_client(self, sock: zmq.Socket) -> None:
        if self.server_public is None:
            raise ValueError("client CURVE keys need the server's public key (CurveKeys.for_client)")
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        sock.curve_serverkey = self.server_public

    def start_authenticator(self, ctx: zmq.Context) -> Any:
        """ZAP handler for ``ctx``: only public keys in ``authorized_dir`` may connect."""
        auth = ThreadAuthenticator(ctx, log=logging.getLogger("hil_robot.transport.auth"))
        auth.start()
        auth.configure_curve(domain="*", location=self.authorized_dir)
        return auth


def _load_secret(root: Path, name: str) -> tuple[bytes, bytes]:
    path = root / "private" / f"{name}.key_secret"
    if not path.is_file():
        raise KeyFileError(f"missing CURVE key pair {path}; run `hil-robot keys dir={root} names={name}`")
    public, secret = zmq.auth.load_certificate(str(path))
    if secret is None:
        raise KeyFileError(f"{path} holds no secret key; regenerate it with `hil-robot keys dir={root} names={name}`")
    return public, secret


def keys_from_config(cfg: Any, *, server: bool) -> CurveKeys | None:
    """CurveKeys for a TransportConfig (None when ``curve_keys_dir`` is empty)."""
    if not cfg.curve_keys_dir:
        return None
    if server:
        return CurveKeys.for_server(cfg.curve_keys_dir, cfg.curve_key_name or "server")
    return CurveKeys.for_client(cfg.curve_keys_dir, cfg.curve_key_name or "client", cfg.curve_server_key)


def check_bind_endpoint(endpoint: str, curve: "CurveKeys | None", allow_insecure: bool = False) -> None:
    """Refuse to bind a tcp endpoint beyond loopback without CURVE (the rule TransportConfig applies to
    ``bind_host``, for endpoints given explicitly, e.g. ``hil-robot learner endpoint=tcp://0.0.0.0:5556``)."""
    from hil_robot.config._build import ConfigError
    from hil_robot.config.transport import LOOPBACK_HOSTS

    scheme, _, rest = endpoint.partition("://")
    if scheme != "tcp" or curve is not None or allow_insecure:
        return
    host = rest.rsplit(":", 1)[0].strip("[]")
    if host not in LOOPBACK_HOSTS:
        raise ConfigError(f"endpoint {endpoint} exposes the weight bus beyond this machine without encryption; "
                          "generate keys with `hil-robot keys dir=keys` and set transport.curve_keys_dir=keys "
                          "(or set transport.allow_insecure=true on a trusted network)")
