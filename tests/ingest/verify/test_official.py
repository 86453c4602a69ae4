"""Cross-checks with the senders' own libraries (test-only dependencies).

A signature the official library makes is accepted by the relay; a delivery the
library rejects is rejected by the relay. Time-window vectors are left out where the
library's policy differs (stripe-python only refuses *old* timestamps) or where it
reads the wall clock (standardwebhooks): those are covered by the vectors themselves.
"""

import datetime
import time

import pytest
import standardwebhooks
import stripe

from relay.ingest.verify import Delivery, Rejected, verify
from tests.ingest.verify.conftest import VECTORS, vector_body

BODY = b'{"id":"evt_official","type":"checkout.session.completed","amount":4900}'
STRIPE_SECRET = "whsec_test_secret"
SW_SECRET = "whsec_eiAOuJrbCQT9W8WsTKxPlSiwrHvwPLwqoVCMJrBVd28="
STRIPE_UNTIMED = [
    v
    for v in VECTORS
    if v["scheme"] == "stripe" and v["now"] == 1767225600 or "fixture" in v["why"]
]
STRIPE_UNTIMED = [v for v in STRIPE_UNTIMED if v["scheme"] == "stripe"]


def stripe_accepts(body: bytes, header: str | None, secret: str) -> bool:
    try:
        stripe.WebhookSignature.verify_header(body.decode(), header, secret, tolerance=None)
    except stripe.SignatureVerificationError:
        return False
    return True


def relay_accepts(spec: dict, delivery: Delivery) -> bool:
    try:
        verify(spec, delivery)
    except Rejected:
        return False
    return True


@pytest.mark.parametrize("vector", STRIPE_UNTIMED, ids=lambda v: v["why"][:40])
def test_stripe_library_and_relay_agree_on_the_untimed_vectors(vector):
    body = vector_body(vector)
    spec = {"scheme": "stripe", "secrets": [vector["secret"]], "tolerance": 300}
    headers = {k.lower(): v for k, v in vector["headers"].items()}
    header = headers.get("stripe-signature")
    delivery = Delivery(body, headers, now=vector["now"])
    assert relay_accepts(spec, delivery) == stripe_accepts(body, header, vector["secret"])
    assert relay_accepts(spec, delivery) == (vector["expect"] == "valid")


def test_a_signature_made_by_stripe_python_is_accepted():
    now = int(time.time())
    signature = stripe.WebhookSignature._compute_signature(f"{now}.{BODY.decode()}", STRIPE_SECRET)
    header = f"t={now},v1={signature}"
    spec = {"scheme": "stripe", "secrets": [STRIPE_SECRET], "tolerance": 300}
    assert stripe_accepts(BODY, header, STRIPE_SECRET)
    verify(spec, Delivery(BODY, {"stripe-signature": header}, now=now))
    tampered = BODY.replace(b"4900", b"100")
    assert not stripe_accepts(tampered, header, STRIPE_SECRET)
    with pytest.raises(Rejected):
        verify(spec, Delivery(tampered, {"stripe-signature": header}, now=now))


def _sw_headers(msg_id: str, timestamp: int, signature: str) -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature,
    }


def test_a_signature_made_by_standardwebhooks_is_accepted_and_both_reject_tampering():
    hook = standardwebhooks.Webhook(SW_SECRET)
    now = int(time.time())
    stamp = datetime.datetime.fromtimestamp(now, tz=datetime.UTC)
    signature = hook.sign("msg_official", stamp, BODY.decode())
    headers = _sw_headers("msg_official", now, signature)
    spec = {"scheme": "standard-webhooks", "secrets": [SW_SECRET], "tolerance": 300}
    hook.verify(BODY, headers)
    verify(spec, Delivery(BODY, headers, now=now))
    for body, hdrs in [
        (BODY.replace(b"4900", b"100"), headers),
        (BODY, {**headers, "webhook-id": "msg_other"}),
        (BODY, _sw_headers("msg_official", now, "v1," + "A" * 44)),
    ]:
        with pytest.raises(standardwebhooks.WebhookVerificationError):
            hook.verify(body, hdrs)
        with pytest.raises(Rejected):
            verify(spec, Delivery(body, hdrs, now=now))


def test_standardwebhooks_rotation_list_made_by_two_library_keys():
    old = standardwebhooks.Webhook("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    new = standardwebhooks.Webhook(SW_SECRET)
    now = int(time.time())
    stamp = datetime.datetime.fromtimestamp(now, tz=datetime.UTC)
    both = f"{old.sign('m1', stamp, BODY.decode())} {new.sign('m1', stamp, BODY.decode())}"
    headers = _sw_headers("m1", now, both)
    new.verify(BODY, headers)
    verify(
        {"scheme": "standard-webhooks", "secrets": [SW_SECRET], "tolerance": 300},
        Delivery(BODY, headers, now=now),
    )
