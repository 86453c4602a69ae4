"""Mapping files are trusted but checked, and what a hostile payload can make a mapping
render is bounded: an email no mail system carries is a rejection with a reason, a YAML
file cannot build Python objects or explode its aliases, a template cannot reach the
environment or files or build giant values."""

import time
import tracemalloc

import pytest

from relay.mapping.model import MAX_EMAIL, is_email


@pytest.mark.parametrize("length", [MAX_EMAIL + 1, 10_000])
def test_a_lead_email_longer_than_smtp_allows_is_rejected(demo, event, length):
    email = "a" * (length - len("@example.com")) + "@example.com"
    rendered = demo.render(event({"email": email}))
    assert rendered.status == "rejected" and rendered.plans == []
    assert rendered.reason == (
        f"rule 'signup': lead.email is {length} characters long; an email address has at most 254"
    )


@pytest.mark.parametrize(
    "email", ["notanemail", "12345", "a@b.co\nx", "a b@c.co", "a@b", "a@@b.co"]
)
def test_a_lead_email_that_is_not_an_address_is_rejected(demo, event, email):
    rendered = demo.render(event({"email": email}))
    assert rendered.status == "rejected" and rendered.plans == []
    assert rendered.reason == f"rule 'signup': lead.email {email!r} is not an email address"


@pytest.mark.parametrize("email", ["jane+tag@example.co.uk", "o'brien@example.ie", "x@b.c"])
def test_unusual_but_real_addresses_are_delivered(demo, event, email):
    assert demo.render(event({"email": email})).plans[0]["lead"]["email"] == email


def test_a_lead_email_of_254_characters_is_delivered(demo, event):
    email = "a" * (MAX_EMAIL - len("@example.com")) + "@example.com"
    rendered = demo.render(event({"email": email}))
    assert rendered.status == "queued"
    assert rendered.plans[0]["lead"]["email"] == email


@pytest.mark.parametrize(
    "tag",
    [
        "!!python/object/apply:os.system ['id']",
        "!!python/object/new:subprocess.Popen [['id']]",
        "!!python/name:os.system",
        "!!python/module:os",
    ],
)
def test_python_tags_are_refused_before_anything_is_built(problems, tag):
    (found,) = problems(f"verify: none\ndescription: {tag}\nrules: [{{name: r}}]\n")
    assert found.startswith("YAML error at line 2, column 14: !!python/")
    assert found.endswith("is not allowed: a mapping file holds plain data, no Python objects")


def test_billion_laughs_is_refused_fast_and_small(problems):
    lines = ["a0: &a0 [" + ", ".join(['"lol"'] * 10) + "]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 12)]
    tracemalloc.start()
    started = time.monotonic()
    try:
        (found,) = problems("\n".join(lines) + "\nverify: none\nrules: [{name: r}]\n")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.monotonic() - started < 1
    assert peak < 5 * 1024 * 1024
    assert "YAML aliases expand to more than 100000 values" in found


ESCAPES = {
    "{{ self.__init__.__globals__ }}": "access to attribute '__init__' of 'TemplateReference'"
    " object is unsafe.",
    "{{ cycler.__init__.__globals__.os.environ }}": "access to attribute '__init__' of"
    " 'StrictUndefined' object is unsafe.",
    "{{ lipsum.__globals__['os'].popen('id').read() }}": "'lipsum' is undefined",
    "{{ joiner.__init__.__globals__ }}": "access to attribute '__init__' of 'StrictUndefined'"
    " object is unsafe.",
    "{{ namespace() }}": "'namespace' is undefined",
    "{{ body.email.__class__.__base__.__subclasses__() }}": "access to attribute '__class__' of"
    " 'str' object is unsafe.",
}


@pytest.mark.parametrize(("source", "reason"), ESCAPES.items())
def test_templates_reaching_for_globals_reject_the_event(one_field, event, source, reason):
    rendered = one_field("city", source).render(event({"email": "a@b.c"}))
    assert rendered.status == "rejected"
    assert rendered.reason == f"rule 'r': lead.city: {reason}"


@pytest.mark.parametrize(
    "source",
    ["{% include '/etc/passwd' %}", "{% import 'os' as os %}", "{% extends '/etc/hosts' %}"],
)
def test_templates_reading_files_are_refused_at_load(problems, source):
    (found,) = problems(
        f'verify: none\nrules: [{{name: r, lead: {{email: a@b.c, city: "{source}"}}}}]\n'
    )
    assert found.endswith(
        "rules[0].lead.city: templates cannot extend, include or import other templates"
        " (a value only sees body, headers, query and route)"
    )


@pytest.mark.parametrize(
    ("source", "body", "reason"),
    [
        ("{{ body.text * body.n }}", {"text": "ab", "n": 10**9}, "repetition longer than 100000"),
        ("{{ body.n * body.text }}", {"text": "ab", "n": 10**9}, "repetition longer than 100000"),
        ("{{ [body.text] * body.n }}", {"text": "ab", "n": 10**6}, "repetition longer than 100000"),
        ("{{ body.a ** body.b }}", {"a": 10, "b": 10**8}, "power larger than 4096 bits"),
        ("{{ 'x' * 10**9 }}", {}, "repetition longer than 100000"),
    ],
)
def test_arithmetic_cannot_build_giant_values(one_field, event, source, body, reason):
    rendered = one_field("city", source).render(event({"email": "a@b.c", **body}))
    assert rendered.status == "rejected"
    assert rendered.reason == f"rule 'r': lead.city: {reason} refused"


def test_ordinary_arithmetic_still_works(one_field, event):
    rendered = one_field("city", "{{ '-' * 3 }}{{ body.n * 2 }}{{ 2 ** 10 }}").render(
        event({"email": "a@b.c", "n": 21})
    )
    assert rendered.plans[0]["lead"]["city"] == "---421024"


@pytest.mark.parametrize(
    "address",
    [
        "jane@example.com",
        "jane.doe+news@gmail.com",
        "o'brien@example.ie",
        '"john"@example.com',
        "李@例え.jp",
        "jane@münchen.de",
        "x@xn--mnchen-3ya.de",
        "j-d@sub.exa-mple.co",
    ],
)
def test_addresses_of_every_kind_are_emails(address):
    assert is_email(address)


@pytest.mark.parametrize(
    "address",
    [
        "a@-example.com",
        "jane@example-.com",
        "jane.doe@gmail.com.",
        ".jane@example.com",
        "jane.@example.com",
        "jane.secret@example..com",
        "jane@exa_mple.com",
        "jane@[127.0.0.1]",
        "jane@example",
        "jane doe@example.com",
    ],
)
def test_shapes_kartra_would_refuse_are_not_emails(address):
    """Each was queued and sent to Kartra as a lead's email before (an audit)."""
    assert not is_email(address)
