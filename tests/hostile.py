"""A loopback HTTP server whose every answer a test writes by hand, byte by byte.

The bundled local server imitates WaveSpeed faithfully; this one misbehaves on purpose: answers
that trickle, never end, lie about their length, redirect anywhere, or carry NaN. Each answer is
a list of byte strings and pauses (floats, in seconds), sent as listed; the connection closes
after each answer.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

Answer = list[bytes | float]


@dataclass
class Seen:
    """One request as the server received it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.time)


def http_answer(
    status: int = 200,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    *,
    length: int | None = None,
    reason: str = "X",
) -> bytes:
    """A whole HTTP/1.1 answer; ``length`` overrides Content-Length (None: the body's own,
    -1: no Content-Length at all, a close-delimited body)."""
    lines = [f"HTTP/1.1 {status} {reason}"]
    all_headers = {"Connection": "close", **(headers or {})}
    if length != -1:
        all_headers["Content-Length"] = str(len(body) if length is None else length)
    lines += [f"{name}: {value}" for name, value in all_headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def envelope(data: Any, status: int = 200, message: str = "success", raw: str | None = None) -> bytes:
    """A WaveSpeed envelope answer; ``raw`` replaces the JSON text (for NaN, Infinity ...)."""
    text = raw if raw is not None else json.dumps({"code": status, "message": message, "data": data})
    return http_answer(status, text.encode(), {"Content-Type": "application/json"})


class HostileServer:
    """``respond(seen)`` returns the answer for each request."""

    def __init__(self, respond: Callable[[Seen], Answer | bytes], tls: ssl.SSLContext | None = None) -> None:
        self.respond = respond
        self.scheme = "https" if tls else "http"
        self.seen: list[Seen] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                seen = Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                outer.seen.append(seen)
                answer = outer.respond(seen)
                parts = [answer] if isinstance(answer, bytes) else answer
                try:
                    for part in parts:
                        if isinstance(part, float):
                            time.sleep(part)
                        else:
                            self.wfile.write(part)
                            self.wfile.flush()
                except OSError:
                    pass  # the client gave up, as it should
                self.close_connection = True

            do_GET = do_POST = do_PUT = do_HEAD = do_CONNECT = _serve

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        if tls is not None:
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> HostileServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def loopback_certificate(directory: Path) -> tuple[Path, ssl.SSLContext]:
    """A self-signed certificate for 127.0.0.1: its PEM file (a CA bundle that trusts only it)
    and a server context that presents it."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "loopback.pem", directory / "loopback.key"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_file, key_file)
    return cert_file, server
