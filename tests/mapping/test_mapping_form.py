"""The `form:` block of a browser-facing route."""


def test_form_settings_are_checked(problems):
    found = problems(
        "verify: none\nform: {origins: ['https://x.example/path'], rate_limit: 0, "
        "trust_forwarded_for: 'yes'}\nrules: [{name: r}]\n"
    )
    assert found == [
        "form.origins[0]: must be an origin like https://www.example.com (no path)",
        "form.rate_limit: must be 1 to 10000 posts a minute",
        "form.trust_forwarded_for: must be true or false",
    ]
