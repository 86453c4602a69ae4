"""Templates cannot reach Python internals, the environment, files or the payload's insides."""

import pytest

ESCAPES = [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ body.__class__ }}",
    "{{ body.email.__class__.__base__ }}",
    "{{ self.__init__.__globals__ }}",
    "{{ self._TemplateReference__context }}",
    "{{ config }}",
    "{{ os.environ }}",
    "{{ lipsum.__globals__.os.environ }}",
    "{{ cycler.__init__.__globals__.os }}",
    "{{ namespace.__init__.__globals__ }}",
    "{{ range.__self__ }}",
    "{{ request.environ }}",
    "{{ body.update({'email': 'x'}) }}",
    "{{ (body | attr('__class__')) }}",
    "{{ body['__class__'] }}",
    "{{ '{0.__class__}'.format(body) }}",
    "{% set x = body.pop('email') %}{{ x }}",
    "{{ body.email.format_map.__self__ }}",
]


@pytest.mark.parametrize("source", ESCAPES)
def test_escapes_are_rejected_not_rendered(one_field, event, source, monkeypatch):
    monkeypatch.setenv("RELAY_SANDBOX_CANARY", "s3cret")
    mapping = one_field("city", source)
    body = {"email": "a@b.c"}
    rendered = mapping.render(event(body))
    assert rendered.status == "rejected", rendered
    assert "s3cret" not in rendered.reason
    assert body == {"email": "a@b.c"}


def test_security_errors_read_as_reasons(one_field, event):
    mapping = one_field("city", "{{ body.__class__ }}")
    assert mapping.render(event({})).reason == (
        "rule 'r': lead.city: access to attribute '__class__' of 'dict' object is unsafe."
    )


def test_environment_is_not_visible(load, event):
    mapping = load(
        'verify: none\nrules: [{name: r, when: "environ is defined or os is defined '
        'or config is defined or range is defined", lead: {email: a@b.c}}]\n'
    )
    assert mapping.render(event({})).reason == "no rule matched"
