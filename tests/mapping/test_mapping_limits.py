"""What a hostile payload can make a mapping render: an email no mail system carries is
a rejection with a reason, never a row the database refuses."""

import pytest

from relay.mapping.model import MAX_EMAIL


@pytest.mark.parametrize("length", [MAX_EMAIL + 1, 10_000])
def test_a_lead_email_longer_than_smtp_allows_is_rejected(demo, event, length):
    email = "a" * (length - len("@example.com")) + "@example.com"
    rendered = demo.render(event({"email": email}))
    assert rendered.status == "rejected" and rendered.plans == []
    assert rendered.reason == (
        f"rule 'signup': lead.email is {length} characters long; an email address has at most 254"
    )


def test_a_lead_email_of_254_characters_is_delivered(demo, event):
    email = "a" * (MAX_EMAIL - len("@example.com")) + "@example.com"
    rendered = demo.render(event({"email": email}))
    assert rendered.status == "queued"
    assert rendered.plans[0]["lead"]["email"] == email
