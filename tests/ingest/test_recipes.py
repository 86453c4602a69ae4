"""Every recipe in mappings/examples/ loads with its env vars and renders its sender's
fixtures into exactly these Kartra plans (the lead, its mode, the actions in order).
Events that name only a customer id find the lead among the identities the other
fixtures taught (`remember`), as they would in a relay that received them all."""

import pytest

from relay.ingest.parse import parse_body
from relay.mapping import MappingError, load_mapping, load_mappings
from relay.mapping.filters import IDENTITIES
from relay.mapping.model import Identity
from tests.ingest.senders import EXAMPLES, RECIPE_ENV, fixture, fixtures

BUYERS = ("subscribe_lead_to_list", "Buyers")
NO_IDENTITY = "no lead identity for customer cus_RFixtureMaria01"


def upsert(email, first="", last="", phone="", **custom):
    lead = {"email": email, "first_name": first, "last_name": last, "phone": phone}
    lead = {k: v for k, v in lead.items() if v}
    if custom:
        lead["custom_fields"] = [
            {"field_identifier": k, "field_value": v} for k, v in custom.items()
        ]
    return "upsert", lead


def existing(email):
    return "existing", {"email": email}


def taken_back(product, tag="Refunded"):
    return [("unassign_tag", product), ("assign_tag", tag)]


EXPECTED = {
    ("stripe", "checkout.session.completed"): (
        upsert("jane.doe@example.com", "Jane", "Doe", "+15555550123"),
        [("assign_tag", "Course 101"), BUYERS],
    ),
    ("stripe", "charge.refunded"): (
        existing("john.smith@example.com"),
        taken_back("Launch Masterclass"),
    ),
    ("stripe", "customer.subscription.deleted"): NO_IDENTITY,
    ("paypal", "CHECKOUT.ORDER.COMPLETED"): (
        upsert("daniel.wright@example.com", "Daniel", "Wright"),
        [("assign_tag", "Podcast Launch Checklist"), BUYERS],
    ),
    ("paypal", "PAYMENT.CAPTURE.REFUNDED"): (
        existing("daniel.wright@example.com"),
        taken_back("Podcast Launch Checklist"),
    ),
    ("paypal-ipn", "web_accept.Completed"): (
        upsert("chloe.dubois@example.org", "Chloé", "Dubois", "5555550199"),
        [("assign_tag", "Email Swipe eBook"), BUYERS],
    ),
    ("paypal-ipn", "Refunded"): (
        existing("chloe.dubois@example.org"),
        taken_back("Email Swipe eBook"),
    ),
    ("shopify", "orders-create"): (
        upsert("liam.obrien@example.com", "Liam", "O'Brien", "+15555550142"),
        [("assign_tag", "Copywriting Bootcamp"), BUYERS],
    ),
    ("shopify", "orders-cancelled"): (
        existing("liam.obrien@example.com"),
        taken_back("Copywriting Bootcamp"),
    ),
    ("shopify", "refunds-create"): (
        existing("liam.obrien@example.com"),
        [("assign_tag", "Refunded")],
    ),
    ("woocommerce", "order.created"): (
        (
            "upsert",
            {
                "email": "chloe.dubois@example.org",
                "first_name": "Chloé",
                "last_name": "Dubois",
                "phone": "+33155550177",
                "country": "FR",
            },
        ),
        [("assign_tag", "Launch Accelerator"), BUYERS],
    ),
    ("woocommerce", "order.updated-refunded"): (
        existing("chloe.dubois@example.org"),
        taken_back("Launch Accelerator"),
    ),
    ("paddle", "customer.created"): (upsert("emma.johnson@example.com", "Emma", "Johnson"), []),
    ("paddle", "transaction.completed"): (
        upsert("emma.johnson@example.com"),
        [("assign_tag", "Funnel Templates Club"), BUYERS],
    ),
    ("paddle", "subscription.canceled"): (
        existing("emma.johnson@example.com"),
        taken_back("Funnel Templates Club", "Cancelled"),
    ),
    ("lemonsqueezy", "order_created"): (
        upsert("sam.lee@example.com", "Sam", "Lee"),
        [("assign_tag", "Swipe File Vault"), BUYERS],
    ),
    ("lemonsqueezy", "order_refunded"): (
        existing("sam.lee@example.com"),
        taken_back("Swipe File Vault"),
    ),
    ("gumroad", "sale"): (
        upsert("noah.kim@example.com", "Noah", "Kim"),
        [("assign_tag", "Notion Content Planner"), BUYERS],
    ),
    ("gumroad", "refund"): (existing("noah.kim@example.com"), taken_back("Notion Content Planner")),
    ("thrivecart", "order.success"): (
        upsert("ava.martinez@example.com", "Ava", "Martinez", "+15555550188"),
        [("assign_tag", "Email Marketing Basics"), BUYERS],
    ),
    ("thrivecart", "order.refund"): (
        existing("ava.martinez@example.com"),
        taken_back("Email Marketing Basics"),
    ),
    ("samcart", "order"): (
        upsert("ethan.brooks@example.com", "Ethan", "Brooks", "+15555550191"),
        [("assign_tag", "Webinar Kit"), BUYERS],
    ),
    ("samcart", "refund"): (existing("ethan.brooks@example.com"), taken_back("Webinar Kit")),
    ("typeform", "form_response"): (
        upsert(
            "noah.williams@example.com",
            "Noah",
            "Williams",
            budget="$1k–$5k",
            goals="Grow my list from 2k to 10k subscribers.",
        ),
        [("subscribe_lead_to_list", "Strategy Call Requests")],
    ),
    ("jotform", "submission"): (
        upsert(
            "liam.obrien@example.com",
            "Liam",
            "O'Brien",
            "5555550142",
            heard_about="Podcast",
            challenge="Getting people to show up live",
        ),
        [("subscribe_lead_to_list", "Masterclass")],
    ),
    ("tally", "FORM_RESPONSE"): (
        upsert(
            "olivia.brown@example.com", "Olivia", "Brown", "+15555550155", program="Group coaching"
        ),
        [("subscribe_lead_to_list", "Waitlist")],
    ),
    ("google-forms", "form-submit"): (
        upsert(
            "grace.lee@example.com",
            "Grace",
            "Lee",
            "5555550121",
            session="Tuesday 7pm ET",
            topics="Email, Funnels",
        ),
        [("subscribe_lead_to_list", "Webinar")],
    ),
    ("gravityforms", "entry-all-fields"): (
        upsert(
            "isabella.rossi@example.com",
            "Isabella",
            "Rossi",
            "5555550133",
            goal="I want to launch my first course.",
            interests="Weekly group calls, Private community",
        ),
        [("subscribe_lead_to_list", "Coaching Applicants")],
    ),
    ("calendly", "invitee.created"): (
        upsert("lucas.martin@example.com", "Lucas", "Martin", "+15555550166"),
        [
            ("assign_tag", "Booked: 30 Minute Discovery Call"),
            ("subscribe_lead_to_list", "Discovery Calls"),
        ],
    ),
    ("standard-webhooks", "contact.created"): (
        upsert("alex.chen@example.net", "Alex", "Chen", "+15555550144"),
        [("subscribe_lead_to_list", "Leads")],
    ),
    ("standard-webhooks", "invoice.paid"): (
        upsert("priya.patel@example.com", "Priya", "Patel"),
        [("assign_tag", "Growth Plan"), BUYERS],
    ),
    ("html-form", "optin.urlencoded"): (
        upsert(
            "mia.anderson@example.com",
            "Mia",
            "Anderson",
            "+15555550110",
            interests="Coaching, Workshops",
        ),
        [("subscribe_lead_to_list", "Newsletter")],
    ),
    ("html-form", "contact.multipart"): (
        upsert("mia.anderson@example.com", "Mia", "Anderson"),
        [("subscribe_lead_to_list", "Newsletter")],
    ),
}
EVENT_IDS = {
    ("stripe", "checkout.session.completed"): "evt_1QFixtureCheckout0001",
    ("shopify", "orders-create"): "98880550-7158-44d4-b7cd-2c97c8a091b5",
    ("standard-webhooks", "contact.created"): "msg_2qFixtureStdWebhooks0001",
    ("standard-webhooks", "invoice.paid"): "msg_2qFixtureSvixBranded0002",
    ("paddle", "transaction.completed"): "evt_01jgfixtureevent00000002",
    ("gumroad", "refund"): "refund:Q7fixtureSALEID1==",
    ("thrivecart", "order.success"): "order.success:3141592:000003141",
    ("calendly", "invitee.created"): "invitee.created:https://api.calendly.com/scheduled_events/"
    "GBGBDCAADAEDCRZ2/invitees/AAAAAFIXTUREINV1",
}


def recipe(sender: str):
    return load_mapping(EXAMPLES / f"{sender}.yaml", RECIPE_ENV)


def render(sender: str, name: str, known=None, **changes):
    body, headers = fixture(sender, name)
    headers = {k.lower(): v for k, v in headers.items()}
    parsed = parse_body(headers["content-type"], body) | changes
    payload = {"body": parsed, "headers": headers, "query": {}, "route": sender}
    if known is not None:
        payload[IDENTITIES] = lambda account, customer_id: known.get((account, customer_id))
    mapping = recipe(sender)
    return mapping.render(payload), mapping.event_id(payload)


def taught(sender: str) -> dict:
    """What the sender's fixtures teach: (account, customer id) -> email."""
    known = {}
    for fixture_sender, name in fixtures():
        if fixture_sender == sender and (sender, name) in EXPECTED:
            identity = render(sender, name)[0].identity
            if identity is not None:
                known[(identity.account, identity.customer_id)] = identity.email
    return known


def test_every_fixture_has_an_expectation_and_every_sender_a_recipe():
    deliveries = set(fixtures()) - {("woocommerce", "ping")}  # answered by the verifier
    assert deliveries == set(EXPECTED)
    assert {path.stem for path in EXAMPLES.glob("*.yaml")} == {s for s, _ in deliveries}


def test_the_recipes_load_together_as_routes(tmp_path):
    for path in EXAMPLES.glob("*.yaml"):
        (tmp_path / path.name).write_text(path.read_text())
    assert len(load_mappings(tmp_path, RECIPE_ENV)) == 18


def test_a_recipe_without_its_env_var_names_it():
    with pytest.raises(MappingError, match="STRIPE_WEBHOOK_SECRET is not set"):
        load_mapping(EXAMPLES / "stripe.yaml", {})


@pytest.mark.parametrize(
    ("sender", "name"), sorted(EXPECTED), ids=[f"{s}/{n}" for s, n in sorted(EXPECTED)]
)
def test_recipe_renders_the_fixture(sender, name):
    rendered, event_id = render(sender, name, known=taught(sender))
    expected = EXPECTED[(sender, name)]
    if expected == NO_IDENTITY:
        assert rendered.status == "rejected"
        assert rendered.reason.endswith(expected)
        return
    (mode, lead), actions = expected
    assert rendered.status == "queued", rendered.reason
    [plan] = rendered.plans
    assert plan["lead"] == lead and plan["lead_mode"] == mode and plan["account"] == "default"
    assert [(a["cmd"], a.get("tag_name") or a.get("list_name")) for a in plan["actions"]] == actions
    assert event_id == EVENT_IDS.get((sender, name), event_id)
    assert event_id or sender == "html-form"


def test_an_unknown_product_is_rejected_naming_it():
    rendered, _ = render("samcart", "order", products=[{"sku": "NEW-THING"}])
    assert rendered.status == "rejected"
    assert "'NEW-THING' is not in table 'products'" in rendered.reason


def test_the_html_form_honeypot_ignores_bots():
    rendered, _ = render("html-form", "optin.urlencoded", website="http://spam.example")
    assert (rendered.status, rendered.rule) == ("ignored", "honeypot")


def render_body(sender: str, body: dict):
    return recipe(sender).render({"body": body, "headers": {}, "query": {}, "route": sender})


def parsed(sender: str, name: str) -> dict:
    body, headers = fixture(sender, name)
    return parse_body(headers["Content-Type"], body)


def outcome(sender: str, body: dict) -> tuple[str, str | None, list]:
    rendered = render_body(sender, body)
    actions = [a for plan in rendered.plans for a in plan["actions"]]
    named = [(a["cmd"], a.get("tag_name") or a.get("list_name")) for a in actions]
    return rendered.status, rendered.rule, named


# Stripe API versions from 2025-03-31 moved the line's price under pricing.price_details.
@pytest.mark.parametrize(
    "line",
    [
        {"price": {"product": "prod_RFixturePro"}},
        {"pricing": {"type": "price_details", "price_details": {"product": "prod_RFixturePro"}}},
    ],
)
def test_stripe_invoice_paid_tags_the_subscription_product(line):
    invoice = {
        "customer": "cus_RFixtureMaria01",
        "customer_email": "Maria@Example.com",
        "customer_name": "Maria Garcia",
        "customer_phone": None,
        "lines": {"data": [line]},
    }
    rendered = render_body("stripe", {"type": "invoice.paid", "data": {"object": invoice}})
    [plan] = rendered.plans
    assert plan["lead"] == {
        "email": "maria@example.com",
        "first_name": "Maria",
        "last_name": "Garcia",
    }
    assert plan["actions"][0] == {"cmd": "assign_tag", "tag_name": "Pro Membership"}
    assert rendered.identity == Identity("default", "cus_RFixtureMaria01", "maria@example.com")


def test_stripe_checkout_remembers_the_customer_and_a_cancellation_finds_it():
    checkout, _ = render("stripe", "checkout.session.completed")
    assert checkout.identity == Identity("default", "cus_RFixtureJane01", "jane.doe@example.com")
    known = {("default", "cus_RFixtureMaria01"): "maria@example.com"}
    body, headers = fixture("stripe", "customer.subscription.deleted")
    payload = {
        "body": parse_body("application/json", body),
        "headers": {},
        "query": {},
        "route": "stripe",
        IDENTITIES: lambda account, customer_id: known.get((account, customer_id)),
    }
    rendered = recipe("stripe").render(payload)
    assert rendered.status == "queued", rendered.reason
    [plan] = rendered.plans
    assert (plan["lead_mode"], plan["lead"]) == ("existing", {"email": "maria@example.com"})
    assert plan["actions"] == [
        {"cmd": "unassign_tag", "tag_name": "Pro Membership"},
        {"cmd": "assign_tag", "tag_name": "Cancelled"},
    ]
    assert rendered.identity is None


def test_calendly_cancellation_takes_the_booking_tag_back():
    body = {
        "event": "invitee.canceled",
        "payload": {"email": "lucas.martin@example.com", "scheduled_event": {"name": "Intro"}},
    }
    [plan] = render_body("calendly", body).plans
    assert plan["lead_mode"] == "existing"
    assert plan["actions"] == [
        {"cmd": "unassign_tag", "tag_name": "Booked: Intro"},
        {"cmd": "assign_tag", "tag_name": "Cancelled Call"},
    ]


def test_a_partial_stripe_refund_leaves_the_product():
    body = parsed("stripe", "charge.refunded")
    body["data"]["object"]["refunded"] = False
    assert outcome("stripe", body) == ("ignored", "partial-refund", [])


def test_a_gumroad_dispute_the_seller_won_gives_the_product_back():
    body = parsed("gumroad", "refund")
    body |= {"resource_name": "dispute_won", "refunded": "false", "disputed": "true"}
    body["dispute_won"] = "true"
    assert outcome("gumroad", body) == (
        "queued",
        "dispute-won",
        [("assign_tag", "Notion Content Planner"), ("unassign_tag", "Refunded")],
    )
    body |= {"resource_name": "dispute", "dispute_won": "false"}
    assert outcome("gumroad", body)[1] == "refunded"


def test_a_rescheduled_calendly_booking_keeps_its_tag():
    body = parsed("calendly", "invitee.created")
    body["event"] = "invitee.canceled"
    assert outcome("calendly", body)[1] == "cancelled"
    body["payload"]["rescheduled"] = True
    assert outcome("calendly", body) == ("ignored", "rescheduled", [])


@pytest.mark.parametrize(("kind", "item"), [("partial", "product"), ("full", "bump")])
def test_a_thrivecart_refund_of_part_of_an_order_leaves_the_product(kind, item):
    body = parsed("thrivecart", "order.refund")
    body["refund"] |= {"type": kind, "item_type": item}
    assert outcome("thrivecart", body) == ("ignored", "partial-refund", [])


def test_a_partial_lemon_squeezy_refund_leaves_the_product():
    body = parsed("lemonsqueezy", "order_refunded")
    body["data"]["attributes"]["status"] = "partial_refund"
    assert outcome("lemonsqueezy", body) == ("ignored", "partial-refund", [])


def test_a_paypal_subscription_tags_by_plan_and_its_end_takes_the_tag_back():
    subscription = {
        "plan_id": "P-5ML4271244454362WXNWU5NQ",
        "status": "ACTIVE",
        "subscriber": {
            "email_address": "Sam@Example.com",
            "name": {"given_name": "Sam", "surname": "Lee"},
        },
    }
    body = {"event_type": "BILLING.SUBSCRIPTION.ACTIVATED", "resource": subscription}
    [plan] = render_body("paypal", body).plans
    assert plan["lead"] == {"email": "sam@example.com", "first_name": "Sam", "last_name": "Lee"}
    assert outcome("paypal", body)[2] == [("assign_tag", "Pro Membership"), BUYERS]
    for ended in ("BILLING.SUBSCRIPTION.CANCELLED", "BILLING.SUBSCRIPTION.EXPIRED"):
        body = {"event_type": ended, "resource": subscription}
        assert outcome("paypal", body) == (
            "queued",
            "subscription-ended",
            [("unassign_tag", "Pro Membership"), ("assign_tag", "Cancelled")],
        )


def test_a_paypal_ipn_subscription_keeps_its_term_after_a_cancel():
    """subscr_cancel and subscr_eot carry neither txn_id nor payment_status."""
    ipn = {"payer_email": "chloe.dubois@example.org", "item_number": "EBOOK-SWIPE"}
    assert outcome("paypal-ipn", {**ipn, "txn_type": "subscr_cancel"}) == (
        "ignored",
        "subscription-cancelled",
        [],
    )
    assert outcome("paypal-ipn", {**ipn, "txn_type": "subscr_eot"}) == (
        "queued",
        "subscription-ended",
        [("unassign_tag", "Email Swipe eBook"), ("assign_tag", "Cancelled")],
    )
    assert outcome("paypal-ipn", {**ipn, "txn_type": "subscr_signup"}) == (
        "ignored",
        None,
        [],
    )
