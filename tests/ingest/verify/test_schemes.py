"""What the vectors do not cover: HTTP Basic, the generic HMAC, query tokens, the
PayPal certificate cache and its download checks, and the failure counter."""

import base64
import hashlib
import hmac

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from relay.ingest import verify as verifying
from relay.ingest.verify import Delivery, Rejected, Unavailable, paypal, verify
from tests.ingest.verify.conftest import SOURCES, TEST_CERT

BODY = b'{"id": "evt_1"}'


def basic(user: str, password: str) -> dict:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"authorization": f"Basic {token}"}


def test_http_basic():
    spec = {"scheme": "basic", "username": "gumroad", "secrets": ["new-pw", "old-pw"]}
    verify(spec, Delivery(BODY, basic("gumroad", "old-pw")))
    for headers in (
        basic("gumroad", "guess"),
        basic("other", "new-pw"),
        {},
        {"authorization": "Bearer x"},
        {"authorization": "Basic \xff\xfe"},
        {"authorization": "Basic //8="},
    ):
        with pytest.raises(Rejected):
            verify(spec, Delivery(BODY, headers))


@pytest.mark.parametrize(("algorithm", "encoding"), [("sha1", "hex"), ("sha512", "base64")])
def test_generic_hmac_with_prefix_and_timestamp(algorithm, encoding):
    spec = {
        "scheme": "hmac",
        "secrets": ["k"],
        "header": "X-Sig",
        "algorithm": algorithm,
        "encoding": encoding,
        "prefix": "v=",
        "timestamp_header": "X-Ts",
        "tolerance": 60,
    }
    digest = hmac.new(b"k", b"1000." + BODY, getattr(hashlib, algorithm)).digest()
    signature = digest.hex() if encoding == "hex" else base64.b64encode(digest).decode()
    headers = {"x-sig": "v=" + signature, "x-ts": "1000"}
    verify(spec, Delivery(BODY, headers, now=1030))
    with pytest.raises(Rejected, match="tolerance"):
        verify(spec, Delivery(BODY, headers, now=1061))
    with pytest.raises(Rejected, match="start with"):
        verify(spec, Delivery(BODY, {**headers, "x-sig": signature}, now=1000))


def test_query_token():
    spec = {"scheme": "token", "query": "token", "secrets": ["s3cret-token"]}
    verify(spec, Delivery(BODY, {}, query={"token": ["s3cret-token"]}))
    for query in ({}, {"token": ["nope"]}, {"token": ["s3cret-token", "s3cret-token"]}):
        with pytest.raises(Rejected):
            verify(spec, Delivery(BODY, {}, query=query))


def test_none_verifies_nothing():
    verify("none", Delivery(BODY, {}))


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://api.paypal.com/v1/notifications/certs/CERT-1", True),
        ("https://api.sandbox.paypal.com/v1/notifications/certs/CERT-1", True),
        ("http://api.paypal.com/cert", False),
        ("https://paypal.com.evil.example/cert", False),
        ("https://evilpaypal.com/cert", False),
        ("https://api.paypal.com:8443/cert", False),
        ("https://user@api.paypal.com/cert", False),
    ],
)
def test_certificates_come_only_from_paypal_over_https(url, ok):
    assert paypal.is_paypal_url(url) is ok


def test_certificates_are_fetched_once_per_url():
    fetched = []
    store = paypal.Certificates(fetch=lambda url: fetched.append(url) or TEST_CERT)
    for _ in range(3):
        assert store.get("https://api.paypal.com/c/1") is TEST_CERT
    assert fetched == ["https://api.paypal.com/c/1"]


class _Raw:
    def __init__(self, body: bytes):
        self.body = body

    def read(self, size: int, decode_content: bool = True) -> bytes:
        return self.body[:size]


class _Answer:
    """What `requests.get(..., stream=True)` gives the downloader, minus the network."""

    status_code = 200

    def __init__(self, body: bytes):
        self.raw = _Raw(body)


def test_a_downloaded_certificate_must_belong_to_paypal(monkeypatch):
    pem = (SOURCES / "fixtures/paypal/test-cert.pem").read_bytes()
    monkeypatch.setattr("requests.get", lambda url, **kw: _Answer(pem))
    with pytest.raises(Rejected, match="not under paypal.com"):
        paypal.fetch_certificate("https://api.paypal.com/c/1")
    monkeypatch.setattr("requests.get", lambda url, **kw: _Answer(b"not a cert"))
    with pytest.raises(Rejected, match="not PEM"):
        paypal.fetch_certificate("https://api.paypal.com/c/1")


class _Broken(_Raw):
    def read(self, size: int, decode_content: bool = True) -> bytes:
        import urllib3

        raise urllib3.exceptions.ProtocolError("connection broken")


def _answering(status: int, raw: _Raw):
    answer = _Answer(b"")
    answer.status_code, answer.raw = status, raw
    return lambda url, **kw: answer


def _refused(url, **kw):
    import requests

    raise requests.ConnectionError("no route to host")


@pytest.mark.parametrize(
    "get, outcome, words",
    [
        (_refused, Unavailable, "download failed: ConnectionError"),
        (_answering(200, _Broken(b"")), Unavailable, "download failed: ProtocolError"),
        (_answering(503, _Raw(b"busy")), Unavailable, "answered 503"),
        (_answering(429, _Raw(b"slow down")), Unavailable, "answered 429"),
        (_answering(404, _Raw(b"no such certificate")), Rejected, "answered 404"),
    ],
)
def test_a_certificate_that_cannot_be_had_now_is_unavailable_not_rejected(
    monkeypatch, get, outcome, words
):
    """The network or PayPal failing says nothing about the event: PayPal must send it
    again (503), not be told it is forged (401), and never get a 500."""
    monkeypatch.setattr("requests.get", get)
    with pytest.raises(outcome, match=words):
        paypal.fetch_certificate("https://api.paypal.com/c/1")


def test_failures_are_counted_per_route():
    before = verifying.failures().get("route-x", 0)
    verifying.count_failure("route-x")
    assert verifying.failures()["route-x"] == before + 1


def test_generic_hmac_defaults_to_hex_sha256_of_the_body():
    spec = {"scheme": "hmac", "secrets": ["k"], "header": "X-Sig"}
    signature = hmac.new(b"k", BODY, hashlib.sha256).hexdigest()
    verify(spec, Delivery(BODY, {"x-sig": signature.upper()}))
    with pytest.raises(Rejected):
        verify(spec, Delivery(BODY + b" ", {"x-sig": signature}))


def _ed25519_pair():
    private = Ed25519PrivateKey.generate()
    raw = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return private, "whpk_" + base64.b64encode(raw).decode()


def _v1a(private, msg_id: str, timestamp: int, body: bytes) -> str:
    message = f"{msg_id}.{timestamp}.".encode() + body
    return "v1a," + base64.b64encode(private.sign(message)).decode()


def test_standard_webhooks_v1a_ed25519_with_a_public_key():
    private, public = _ed25519_pair()
    body, now = b'{"type":"contact.created"}', 1767225600
    spec = {"scheme": "standard-webhooks", "secrets": [public], "tolerance": 300}

    def delivery(signature, payload=body):
        headers = {
            "webhook-id": "msg_1",
            "webhook-timestamp": str(now),
            "webhook-signature": signature,
        }
        return Delivery(payload, headers, now=now)

    good = _v1a(private, "msg_1", now, body)
    verify(spec, delivery(f"v1,bm90LWl0 {good}"))
    with pytest.raises(Rejected, match="no signature matches"):
        verify(spec, delivery(good, payload=body + b" "))
    other, _ = _ed25519_pair()
    with pytest.raises(Rejected, match="no signature matches"):
        verify(spec, delivery(_v1a(other, "msg_1", now, body)))
    with pytest.raises(Rejected, match="no entry for the configured keys"):
        verify(spec, delivery("v1,bm90LWl0"))
    with pytest.raises(Rejected, match="no signature matches"):
        verify(spec, delivery("v1a,not-base64!"))


def test_standard_webhooks_hmac_and_public_key_side_by_side():
    private, public = _ed25519_pair()
    body, now = b"{}", 1767225600
    hmac_secret = "whsec_" + base64.b64encode(b"k" * 24).decode()
    spec = {"scheme": "standard-webhooks", "secrets": [hmac_secret, public], "tolerance": 300}
    headers = {"webhook-id": "m", "webhook-timestamp": str(now)}
    signed = _v1a(private, "m", now, body)
    verify(spec, Delivery(body, headers | {"webhook-signature": signed}, now=now))
    mac = hmac.new(b"k" * 24, f"m.{now}.".encode() + body, hashlib.sha256).digest()
    v1 = "v1," + base64.b64encode(mac).decode()
    verify(spec, Delivery(body, headers | {"webhook-signature": v1}, now=now))


@pytest.mark.parametrize("timestamp", ["\xb2", "\u0663", "9" * 5000, "", "-5", " 1", "1.5"])
def test_a_timestamp_that_is_not_plain_seconds_is_a_rejection(timestamp):
    spec = {"scheme": "stripe", "secrets": ["whsec_k"], "tolerance": 300}
    header = {"stripe-signature": f"t={timestamp},v1=00"}
    with pytest.raises(Rejected, match="not integer seconds"):
        verify(spec, Delivery(BODY, header, now=1000))
