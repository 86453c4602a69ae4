"""The mapping filters, on their own and inside a template with StrictUndefined."""

import pytest
from jinja2 import StrictUndefined

from relay.mapping import RenderError
from relay.mapping.filters import cents, email, first_name, last_name, make_lookup, phone


@pytest.mark.parametrize(
    ("value", "expected"),
    [(" Jane@Example.COM ", "jane@example.com"), ("", ""), (None, ""), ("a@b.c", "a@b.c")],
)
def test_email(value, expected):
    assert email(value) == expected


@pytest.mark.parametrize(
    ("value", "first", "last"),
    [
        ("Jane van der Berg", "Jane", "van der Berg"),
        ("  Jane   Doe ", "Jane", "Doe"),
        ("Cher", "Cher", ""),
        ("", "", ""),
        (None, "", ""),
    ],
)
def test_names(value, first, last):
    assert (first_name(value), last_name(value)) == (first, last)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("+1 (555) 555-0110", "+15555550110"),
        ("0044 20 7946 0958", "00442079460958"),
        (" +44-20 ", "+4420"),
        ("555.0110 ext", "5550110"),
        ("+1 (555) 010-0000 ext 12", "+15550100000"),
        ("+1 555 010 0000 ext.12", "+15550100000"),
        ("555-0100 x12", "5550100"),
        ("555-0100x12", "5550100"),
        ("555-0100 #12", "5550100"),
        ("555-0100 Extension 7", "5550100"),
        ("", ""),
        (None, ""),
        ("+", ""),
        (5550110, "5550110"),
    ],
)
def test_phone(value, expected):
    assert phone(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1234, "12.34"),
        (4900, "49.00"),
        (5, "0.05"),
        (0, "0.00"),
        (-250, "-2.50"),
        ("4900", "49.00"),
        (4900.0, "49.00"),
    ],
)
def test_cents(value, expected):
    assert cents(value) == expected


@pytest.mark.parametrize("value", [None, "", "12.5", 12.5, True, [1], "abc"])
def test_cents_refuses_what_is_not_a_whole_number(value):
    with pytest.raises(RenderError, match="cents expects a whole number"):
        cents(value)


def test_text_filters_refuse_lists_and_dicts():
    for fn in (email, first_name, last_name, phone):
        with pytest.raises(RenderError, match="expects text, got list"):
            fn(["a"])


def test_filters_raise_on_undefined():
    from jinja2.exceptions import UndefinedError

    for fn in (email, first_name, last_name, phone, cents):
        with pytest.raises(UndefinedError, match="'x' is undefined"):
            fn(StrictUndefined(name="x"))


def test_lookup():
    lookup = make_lookup({"products": {"prod_A": "Course A", "1001": "Course B"}})
    assert lookup("prod_A", "products") == "Course A"
    assert lookup(1001, "products") == "Course B"
    assert lookup("prod_Z", "products", "Other") == "Other"
    assert lookup("prod_Z", "products", default=None) is None
    with pytest.raises(RenderError, match="'prod_Z' is not in table 'products'"):
        lookup("prod_Z", "products")
    with pytest.raises(RenderError, match="no table 'prices'"):
        lookup("prod_A", "prices")


@pytest.mark.parametrize(
    ("source", "body", "expected"),
    [
        ("{{ body.x | default('none') }}", {}, "none"),
        ("{{ body.x | default('none') }}", {"x": "y"}, "y"),
        ("{{ body.tags | join(', ') }}", {"tags": ["a", "b"]}, "a, b"),
        ("{{ body.x | lower | trim }}", {"x": " ABC "}, "abc"),
        ("{{ body.x | replace('-', ' ') | title }}", {"x": "gold-plan"}, "Gold Plan"),
        ("{{ body.name | first_name }}", {"name": "Ann Lee"}, "Ann"),
        (
            "{{ body.amount | cents }} {{ body.currency | upper }}",
            {"amount": 999, "currency": "eur"},
            "9.99 EUR",
        ),
    ],
)
def test_filters_in_templates(one_field, event, source, body, expected):
    (plan,) = one_field("city", source).render(event(body)).plans
    assert plan["lead"]["city"] == expected
