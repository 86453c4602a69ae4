"""PayPal REST webhooks: RSA (PKCS#1 v1.5, SHA-256) over `<id>|<time>|<webhook id>|<crc32>`.

The transmission id and time come from the `PAYPAL-TRANSMISSION-*` headers, the webhook
id from the route's settings (PayPal gave it to the listener URL: a delivery meant for
another listener must fail), the CRC32 of the raw body as unsigned decimal. The public
key is in the certificate at `PAYPAL-CERT-URL`, which the sender chooses: it is only
fetched over https from a PayPal host, checked (subject under paypal.com, validity,
chain as sent), and cached by URL so a burst of events costs one download.

No window is applied to `PAYPAL-TRANSMISSION-TIME`: PayPal documents none, and it is
not known whether its retries are re-signed (SOURCES.md). Replays are stopped by
de-duplication on the event `id`.

requests and cryptography are imported where they are used: they cost every web
process about 11 MB, and only routes verified by PayPal need them.
"""

from __future__ import annotations

import base64
import datetime
import threading
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from relay.ingest.verify.base import Delivery, Rejected, Unavailable

if TYPE_CHECKING:
    from cryptography import x509

FETCH_TIMEOUT = 5.0
MAX_CACHED = 32
MAX_CERT_BYTES = 64 * 1024


def is_paypal_url(url: str) -> bool:
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    return (
        parts.scheme == "https"
        and parts.port in (None, 443)
        and not parts.username
        and (host == "paypal.com" or host.endswith(".paypal.com"))
    )


def fetch_certificate(url: str) -> x509.Certificate:
    """Download and check PayPal's certificate; raise Rejected if it does not hold up, and
    Unavailable if it could not be had now (the network, a timeout, PayPal answering 5xx
    or 429): the event is genuine as far as anyone knows, and PayPal sends it again."""
    import requests
    import urllib3
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature

    try:
        answer = requests.get(url, timeout=FETCH_TIMEOUT, allow_redirects=False, stream=True)
        pem = answer.raw.read(MAX_CERT_BYTES + 1, decode_content=True)
    except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
        # reading the streamed body raises urllib3's own errors, not requests'
        raise Unavailable(f"certificate download failed: {type(exc).__name__}") from None
    if answer.status_code == 429 or answer.status_code >= 500:
        raise Unavailable(f"certificate download answered {answer.status_code}")
    if answer.status_code != 200 or len(pem) > MAX_CERT_BYTES:
        raise Rejected(f"certificate download answered {answer.status_code}")
    try:
        chain = x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise Rejected("certificate download is not PEM") from None
    now = datetime.datetime.now(datetime.UTC)
    leaf = chain[0]
    names = leaf.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    if not names or not str(names[0].value).lower().endswith(".paypal.com"):
        raise Rejected("certificate subject is not under paypal.com")
    for cert, issuer in zip(chain, chain[1:], strict=False):
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise Rejected("certificate chain is outside its validity period")
        try:
            cert.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature):
            raise Rejected("certificate chain does not verify") from None
    if not leaf.not_valid_before_utc <= now <= leaf.not_valid_after_utc:
        raise Rejected("certificate is outside its validity period")
    return leaf


class Certificates:
    """PayPal certificates by URL, fetched once; `fetch` is injectable for tests."""

    def __init__(self, fetch: Callable[[str], x509.Certificate] = fetch_certificate):
        self.fetch = fetch
        self._cache: dict[str, x509.Certificate] = {}
        self._lock = threading.Lock()

    def get(self, url: str) -> x509.Certificate:
        with self._lock:
            cert = self._cache.get(url)
        if cert is None:
            cert = self.fetch(url)
            with self._lock:
                if len(self._cache) >= MAX_CACHED:
                    self._cache.pop(next(iter(self._cache)))
                self._cache[url] = cert
        return cert


CERTIFICATES = Certificates()


def verify_paypal(delivery: Delivery, spec: dict[str, Any]) -> None:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    transmission_id = delivery.header("PAYPAL-TRANSMISSION-ID")
    transmission_time = delivery.header("PAYPAL-TRANSMISSION-TIME")
    signature = delivery.header("PAYPAL-TRANSMISSION-SIG")
    cert_url = delivery.header("PAYPAL-CERT-URL")
    algorithm = delivery.headers.get("paypal-auth-algo", "SHA256withRSA").strip()
    if algorithm != "SHA256withRSA":
        raise Rejected(f"unsupported PAYPAL-AUTH-ALGO {algorithm[:40]!r}")
    if not is_paypal_url(cert_url):
        raise Rejected("PAYPAL-CERT-URL is not an https URL on a paypal.com host")
    try:
        raw_signature = base64.b64decode(signature, validate=True)
    except ValueError:  # binascii.Error, or a character beyond ASCII
        raise Rejected("PAYPAL-TRANSMISSION-SIG is not base64") from None
    crc = zlib.crc32(delivery.body) & 0xFFFFFFFF
    message = f"{transmission_id}|{transmission_time}|{spec['webhook_id']}|{crc}".encode()
    store = delivery.certificates or CERTIFICATES
    key = store.get(cert_url).public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise Rejected("certificate key is not RSA")
    try:
        key.verify(raw_signature, message, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        raise Rejected("signature does not verify") from None
