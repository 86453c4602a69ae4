"""Vectors from ../shared/sources/verify_vectors.json as (spec, delivery) pairs."""

from __future__ import annotations

import json

from cryptography import x509

from relay.ingest.verify import Delivery
from relay.ingest.verify.paypal import Certificates
from tests.conftest import SHARED

SOURCES = SHARED / "sources"
VECTORS = json.loads((SOURCES / "verify_vectors.json").read_text())["vectors"]
TEST_CERT = x509.load_pem_x509_certificate((SOURCES / "fixtures/paypal/test-cert.pem").read_bytes())


def test_certificates() -> Certificates:
    """A certificate store that answers every (PayPal-host) URL with the fixture's test cert."""
    return Certificates(fetch=lambda url: TEST_CERT)


test_certificates.__test__ = False


def vector_body(vector: dict) -> bytes:
    if "body_file" in vector:
        return (SOURCES / vector["body_file"]).read_bytes()
    return vector["body"].encode("utf-8")


def vector_spec(vector: dict) -> dict:
    """The vector's secret as the `verify:` block a mapping file would give."""
    scheme, secret = vector["scheme"], vector["secret"]
    tolerance = vector.get("tolerance_s", 300)
    if scheme == "paypal":
        return {"scheme": "paypal", "webhook_id": secret["webhook_id"]}
    if scheme == "token-body-field":
        return {"scheme": "token", "field": secret["field"], "secrets": [secret["value"]]}
    if scheme == "token-header":
        return {"scheme": "token", "header": secret["header"], "secrets": [secret["value"]]}
    return {"scheme": scheme, "secrets": [secret], "tolerance": tolerance}


def vector_delivery(vector: dict) -> Delivery:
    return Delivery(
        body=vector_body(vector),
        headers={k.lower(): v for k, v in vector["headers"].items()},
        now=vector["now"],
        certificates=test_certificates(),
    )
