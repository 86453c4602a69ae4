"""The `verify:` block: checked per scheme at load, secrets read from the environment."""

import pytest

from relay.mapping import MappingError, load_mapping

RULES = "rules: [{name: r}]\n"


def test_secrets_come_from_the_environment_and_get_defaults(write):
    path = write("t.yaml", 'verify: {scheme: paddle, secret: "${PADDLE_SECRET}"}\n' + RULES)
    mapping = load_mapping(path, {"PADDLE_SECRET": "pdl_ntfset_x"})
    assert mapping.verify == {"scheme": "paddle", "secrets": ["pdl_ntfset_x"], "tolerance": 300}
    assert "pdl_ntfset_x" not in repr(mapping)


def test_several_secrets_for_a_rotation_and_a_custom_tolerance(write):
    text = 'verify: {scheme: stripe, secrets: ["${NEW}", "${OLD}"], tolerance: 60}\n' + RULES
    mapping = load_mapping(write("t.yaml", text), {"NEW": "whsec_a", "OLD": "whsec_b"})
    assert mapping.verify["secrets"] == ["whsec_a", "whsec_b"]
    assert mapping.verify["tolerance"] == 60


def test_a_missing_variable_is_a_start_up_error_naming_it(write):
    path = write("t.yaml", 'verify: {scheme: shopify, secret: "${SHOPIFY_SECRET}"}\n' + RULES)
    with pytest.raises(MappingError) as caught:
        load_mapping(path, {})
    [problem] = caught.value.problems
    assert problem.path == "verify.secret"
    assert problem.message == "environment variable SHOPIFY_SECRET is not set"
    with pytest.raises(MappingError, match="SHOPIFY_SECRET is empty"):
        load_mapping(path, {"SHOPIFY_SECRET": ""})


@pytest.mark.parametrize(
    ("verify", "message"),
    [
        (
            "{scheme: strip, secret: x}",
            "verify.scheme: unknown scheme 'strip' (did you mean 'stripe'?)",
        ),
        ("{scheme: stripe, secret: whsec_abc}", "verify.secret: must be an environment variable"),
        ("{scheme: stripe}", "verify.secret: required key is missing"),
        (
            '{scheme: stripe, secret: "${A}", tolerence: 5}',
            "verify.tolerence: unknown key (did you mean 'tolerance'?)",
        ),
        ('{scheme: stripe, secret: "${A}", tolerance: 0}', "verify.tolerance: must be 1 to 86400"),
        ('{scheme: shopify, secret: "${A}", tolerance: 5}', "verify.tolerance: unknown key"),
        (
            '{scheme: token, secret: "${A}"}',
            "verify: needs exactly one of `header`, `query` or `field`",
        ),
        (
            '{scheme: hmac, secret: "${A}", header: X-Sig, algorithm: md5}',
            "verify.algorithm: must be sha1",
        ),
        ("{scheme: paypal}", "verify.webhook_id: required key is missing"),
        ('{scheme: basic, secret: "${A}"}', "verify.username: required key is missing"),
    ],
)
def test_each_scheme_is_checked_with_a_hint(problems, verify, message):
    found = problems(f"verify: {verify}\n" + RULES)
    assert any(p.startswith(message) for p in found), found


def test_a_standard_webhooks_secret_must_decode(write):
    path = write("t.yaml", 'verify: {scheme: standard-webhooks, secret: "${SW}"}\n' + RULES)
    with pytest.raises(MappingError, match="not whsec_ followed by base64"):
        load_mapping(path, {"SW": "whsec_not base64!"})
    assert load_mapping(path, {"SW": "whsec_dGVzdA=="}).verify["secrets"] == ["whsec_dGVzdA=="]
    with pytest.raises(MappingError, match="nor whpk_ followed by a base64 ed25519 public key"):
        load_mapping(path, {"SW": "whpk_dGVzdA=="})
    public = "whpk_" + "A" * 43 + "="
    assert load_mapping(path, {"SW": public}).verify["secrets"] == [public]


def test_verify_none_stays_none(write):
    assert load_mapping(write("t.yaml", "verify: none\n" + RULES), {}).verify == "none"
