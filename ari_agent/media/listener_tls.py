"""TLS for the agent's chan_websocket listener (``connection_type=client``): ``wss://``.

The certificate and key are checked before anything listens, so a wrong file is a
:class:`ConfigError` at ``check``/``run`` start naming the setting and the fix, never a
handshake that fails on the first call. :func:`check_pair` is pure (bytes and ``now``
in); :func:`listener_ssl` reads the files and builds the context. Key material never
reaches a message: only file names and what is wrong with them.
"""

from __future__ import annotations

import datetime
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from ari_agent.errors import ConfigError

CERT_SETTING = "AGENT_MEDIA__WEBSOCKET__TLS_CERT_FILE"
KEY_SETTING = "AGENT_MEDIA__WEBSOCKET__TLS_KEY_FILE"
CERT_FIELD = "media.websocket.tls_cert_file"
KEY_FIELD = "media.websocket.tls_key_file"
_CERT_FIX = (
    f"point {CERT_SETTING} (or '{CERT_FIELD}') at a readable PEM file holding the agent's "
    "certificate (then any intermediates), for the name or address in websocket_client.conf's uri"
)
_KEY_FIX = (
    f"point {KEY_SETTING} (or '{KEY_FIELD}') at a readable, unencrypted PEM file holding the "
    "private key of that certificate"
)


class PairError(ValueError):
    """What is wrong with a certificate and key pair; ``field`` says which setting."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


def check_pair(cert_pem: bytes, key_pem: bytes, now: datetime.datetime) -> x509.Certificate:
    """The leaf certificate, if ``key_pem`` is its key and it is valid at ``now`` (no I/O)."""
    try:
        chain = x509.load_pem_x509_certificates(cert_pem)
    except ValueError:
        raise PairError(CERT_FIELD, "holds no PEM certificate") from None
    leaf = chain[0]
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        # The agent starts unattended: nobody is there to type a passphrase.
        raise PairError(KEY_FIELD, "the private key is encrypted") from None
    except (ValueError, UnsupportedAlgorithm):
        raise PairError(KEY_FIELD, "holds no PEM private key") from None
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*spki) != leaf.public_key().public_bytes(*spki):
        raise PairError(KEY_FIELD, "the private key does not match the certificate (the first in its file)")
    if now < leaf.not_valid_before_utc:
        raise PairError(
            CERT_FIELD, f"the certificate is not valid before {leaf.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"
        )
    if now > leaf.not_valid_after_utc:
        raise PairError(
            CERT_FIELD, f"the certificate expired on {leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
        )
    return leaf


def _read(path: Path, field: str, fix: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        reason = exc.strerror or exc.__class__.__name__
        raise ConfigError(field, f"cannot read {path} ({reason}).", fix) from None


def _no_passphrase() -> bytes:
    # Without a callback OpenSSL would prompt on the terminal for an encrypted key.
    return b""


def listener_ssl(cert_file: Path, key_file: Path, now: datetime.datetime | None = None) -> ssl.SSLContext:
    """The listener's server context (TLS 1.2 or later), or ConfigError naming the setting."""
    cert_pem = _read(cert_file, CERT_FIELD, _CERT_FIX)
    key_pem = _read(key_file, KEY_FIELD, _KEY_FIX)
    try:
        check_pair(cert_pem, key_pem, now or datetime.datetime.now(datetime.UTC))
    except PairError as exc:
        fix = _CERT_FIX if exc.field == CERT_FIELD else _KEY_FIX
        named = cert_file if exc.field == CERT_FIELD else key_file
        raise ConfigError(exc.field, f"{named}: {exc.problem}.", fix) from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert_file, key_file, password=_no_passphrase)
    except (OSError, ssl.SSLError) as exc:
        # Parsed above, so this is OpenSSL disagreeing (an algorithm it will not serve, say).
        raise ConfigError(
            CERT_FIELD, f"OpenSSL refused {cert_file} with {key_file} ({exc.__class__.__name__}).", _CERT_FIX
        ) from None
    return context


def settings_ssl(cert_file: Path | None, key_file: Path | None) -> ssl.SSLContext | None:
    """The context for the configured pair, None when TLS is off (settings ensure both or neither)."""
    if cert_file is None or key_file is None:
        return None
    return listener_ssl(cert_file, key_file)
