"""TLS for ARI: ``https://`` and ``wss://`` to an Asterisk whose HTTP server runs TLS.

The certificate is verified against the system's CAs, or the operator's CA file
(``AGENT_ARI__CA_FILE``) for a private CA. One that does not verify is refused
with the fix in the message; only an explicit ``AGENT_ARI__TLS_VERIFY=false``
skips the check, and the agent then says so at start and in ``doctor``.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp

from ari_agent.errors import ConfigError

# What aiohttp takes as ``ssl=``: a context, True (its default checks), or False (no checks).
SslArg = ssl.SSLContext | bool

CA_SETTING = "AGENT_ARI__CA_FILE"
VERIFY_SETTING = "AGENT_ARI__TLS_VERIFY"
UNVERIFIED_WARNING = (
    f"ARI over TLS without certificate verification ({VERIFY_SETTING}=false): anyone on the path "
    f"can pose as Asterisk and read the ARI password; set {CA_SETTING} instead"
)


def is_tls(url: str) -> bool:
    return urlsplit(url.strip()).scheme.lower() == "https"


def client_ssl(url: str, ca_file: Path | None, verify: bool) -> SslArg:
    """The ``ssl`` argument for every ARI request and the events WebSocket."""
    if not is_tls(url):
        return True  # unused on http://
    if not verify:
        return False
    try:
        return ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    except (OSError, ssl.SSLError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(
            "ari.ca_file",
            f"cannot load the CA file {ca_file} ({reason}).",
            f"point {CA_SETTING} at a PEM file holding the CA that signed Asterisk's certificate",
        ) from None


def tls_problem(exc: BaseException, url: str) -> str | None:
    """A failed connection explained, if TLS is why; None for any other failure."""
    where = urlsplit(url).netloc
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        cert_error = exc.certificate_error
        detail = getattr(cert_error, "verify_message", None) or str(cert_error)
        return (
            f"Asterisk's TLS certificate at {where} does not verify ({detail}); refusing to connect. "
            f"Set {CA_SETTING} to the CA that signed it (or {VERIFY_SETTING}=false to skip the "
            "check, which is unsafe)"
        )
    if isinstance(exc, aiohttp.ClientSSLError):
        return (
            f"TLS handshake with {where} failed ({exc.__class__.__name__}); is Asterisk's HTTP server "
            "serving TLS on that port (http.conf: tlsenable = yes, tlsbindaddr)?"
        )
    return None
