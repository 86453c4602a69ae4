"""Random payloads never make `render` raise: every outcome is queued, ignored or rejected."""

import contextlib
import json
import random

import pytest

from relay.mapping import RenderError
from tests.conftest import FIXTURES

KEYS = [
    "email",
    "first_name",
    "last_name",
    "phone",
    "id",
    "type",
    "data",
    "object",
    "vip",
    "livemode",
    "amount_total",
    "payment_link",
    "metadata",
    "customer_details",
    "name",
    "kartra_transaction_id",
    "amount_refunded",
    "interest_ids",
    "__class__",
    "items",
]
LEAVES = [
    None,
    True,
    False,
    0,
    -1,
    10**30,
    1.5,
    float("nan"),
    "",
    " ",
    "a@b.c",
    "{{ 7*7 }}",
    "{% raw %}",
    "plink_1QFixtureCourse101",
    "checkout.session.completed",
    "charge.refunded",
    "customer.subscription.deleted",
    "Jane van der Berg",
    "é\u0000\ud7ff",
]


def random_value(rng: random.Random, depth: int = 0):
    roll = rng.random()
    if depth < 4 and roll < 0.3:
        return {rng.choice(KEYS): random_value(rng, depth + 1) for _ in range(rng.randint(0, 5))}
    if depth < 4 and roll < 0.4:
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return rng.choice(LEAVES)


def checkout_like(rng: random.Random):
    """A Stripe-shaped body with random holes, so rules get deep before they fail."""
    with open(FIXTURES / "stripe" / "checkout.session.completed.json") as fh:
        body = json.load(fh)
    obj = body["data"]["object"]
    for key in rng.sample(sorted(obj), k=rng.randint(0, 8)):
        obj[key] = random_value(rng, 2)
    body["type"] = rng.choice(LEAVES[-4:-1] + ["other"])
    return body


@pytest.mark.parametrize("seed", range(4))
def test_render_never_raises(demo, rich, event, seed):
    rng = random.Random(seed)
    outcomes = set()
    for _ in range(300):
        body = random_value(rng) if rng.random() < 0.5 else checkout_like(rng)
        body = body if isinstance(body, dict) else {"email": body}
        payload = event(body, query=rng.choice([{}, {"test": "1"}]))
        for mapping in (demo, rich):
            rendered = mapping.render(payload)
            outcomes.add(rendered.status)
            assert rendered.status in ("queued", "ignored", "rejected")
            assert bool(rendered.plans) == (rendered.status == "queued")
            assert (rendered.reason is None) == (rendered.status == "queued")
            json.dumps(rendered.plans, allow_nan=False)
            with contextlib.suppress(RenderError):
                mapping.event_id(payload)
    assert outcomes == {"queued", "ignored", "rejected"}
