"""A mapping file's `verify:` block: its shape per scheme, its secrets from the environment.

    verify: {scheme: stripe, secret: "${STRIPE_WEBHOOK_SECRET}", tolerance: 300}

A secret is never written in a file (files live in git): every secret is a `${NAME}`
reference, read from the environment when the mapping is loaded, so a missing variable
stops start-up naming it instead of failing every delivery later. `secrets:` (a list)
holds several during a rotation; any one of them verifies. The checks here are about the
file; how each scheme verifies a request lives in `relay/ingest/verify/`.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from typing import Any

from relay.mapping.errors import Problem
from relay.mapping.expressions import did_you_mean

DEFAULT_TOLERANCE = 300
MAX_TOLERANCE = 86_400
ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")

_SECRET = {"secret", "secrets"}
_TIMED = _SECRET | {"tolerance"}
# scheme -> (required keys, optional keys); "secret" stands for secret or secrets.
SCHEMES: dict[str, tuple[set[str], set[str]]] = {
    "stripe": ({"secret"}, _TIMED),
    "standard-webhooks": ({"secret"}, _TIMED),
    "calendly": ({"secret"}, _TIMED),
    "paddle": ({"secret"}, _TIMED),
    "shopify": ({"secret"}, _SECRET),
    "woocommerce": ({"secret"}, _SECRET),
    "typeform": ({"secret"}, _SECRET),
    "tally": ({"secret"}, _SECRET),
    "lemonsqueezy": ({"secret"}, _SECRET),
    "paypal": ({"webhook_id"}, {"webhook_id"}),
    "hmac": (
        {"secret", "header"},
        _TIMED | {"header", "algorithm", "encoding", "prefix", "timestamp_header"},
    ),
    "token": ({"secret"}, _SECRET | {"header", "query", "field"}),
    "basic": ({"secret", "username"}, _SECRET | {"username"}),
}
TIMED = {"stripe", "standard-webhooks", "calendly", "paddle"}
_EXAMPLES = {
    "stripe": '{scheme: stripe, secret: "${STRIPE_WEBHOOK_SECRET}"}',
    "paypal": '{scheme: paypal, webhook_id: "${PAYPAL_WEBHOOK_ID}"}',
    "token": '{scheme: token, query: token, secret: "${FORM_TOKEN}"}',
    "basic": '{scheme: basic, username: gumroad, secret: "${GUMROAD_PASSWORD}"}',
    "hmac": '{scheme: hmac, header: X-Signature, encoding: hex, secret: "${HOOK_SECRET}"}',
}


class Secret(str):
    """A secret read from the environment; its repr never shows it (mappings get printed)."""

    def __repr__(self) -> str:
        return "Secret('***')"


def check_verify(value: Any) -> list[tuple[str, str, str]]:
    """Shape problems of a `verify:` value as (sub-path, message, hint); [] if none."""
    if value == "none":
        return []
    if not isinstance(value, dict):
        return [
            (
                "",
                f"must be `none` or a mapping with `scheme:`, not {value!r}",
                "`verify: none` accepts unsigned posts; signed senders use {scheme: <name>, ...}",
            )
        ]
    scheme = value.get("scheme")
    if not isinstance(scheme, str) or not scheme:
        return [("", "needs a `scheme:`", "e.g. `verify: " + _EXAMPLES["stripe"] + "`")]
    if scheme not in SCHEMES:
        hint = did_you_mean(scheme, SCHEMES) or "schemes: " + ", ".join(SCHEMES)
        return [("scheme", f"unknown scheme {scheme!r}", hint)]
    required, optional = SCHEMES[scheme]
    found: list[tuple[str, str, str]] = []
    for key in value:
        if key != "scheme" and key not in optional:
            hint = (
                did_you_mean(str(key), optional) or f"{scheme} takes {', '.join(sorted(optional))}"
            )
            found.append((str(key), "unknown key", hint))
    example = _EXAMPLES.get(
        scheme, f'{{scheme: {scheme}, secret: "${{{_env_name(scheme)}_SECRET}}"}}'
    )
    if "secret" in required:
        found += _check_secrets(value, example)
    for key in sorted(required - {"secret"}):
        if key not in value:
            found.append((key, "required key is missing", f"e.g. `verify: {example}`"))
    found += _check_settings(scheme, value)
    return found


def _env_name(scheme: str) -> str:
    return scheme.upper().replace("-", "_")


def _check_secrets(value: dict[str, Any], example: str) -> list[tuple[str, str, str]]:
    if "secret" in value and "secrets" in value:
        return [("secrets", "give `secret` or `secrets`, not both", "")]
    if "secret" not in value and "secrets" not in value:
        return [("secret", "required key is missing", f"e.g. `verify: {example}`")]
    if "secrets" in value:
        items = value["secrets"]
        if not isinstance(items, list) or not items:
            return [("secrets", "must be a non-empty list of ${ENV_VAR} references", "")]
        return [p for i, item in enumerate(items) for p in _check_reference(f"secrets[{i}]", item)]
    return _check_reference("secret", value["secret"])


def _check_reference(path: str, item: Any) -> list[tuple[str, str, str]]:
    if isinstance(item, str) and ENV_REFERENCE.fullmatch(item):
        return []
    return [
        (
            path,
            "must be an environment variable reference like ${STRIPE_WEBHOOK_SECRET}",
            "never write a secret in a mapping file: put it in the environment and name it here",
        )
    ]


def _check_settings(scheme: str, value: dict[str, Any]) -> list[tuple[str, str, str]]:
    found = []
    tolerance = value.get("tolerance", DEFAULT_TOLERANCE)
    if isinstance(tolerance, bool) or not isinstance(tolerance, int):
        found.append(("tolerance", "must be a whole number of seconds", "default 300"))
    elif not 1 <= tolerance <= MAX_TOLERANCE:
        found.append(("tolerance", f"must be 1 to {MAX_TOLERANCE} seconds", "default 300"))
    for key in ("header", "timestamp_header"):
        if key in value and not (isinstance(value[key], str) and HEADER_NAME.fullmatch(value[key])):
            found.append((key, "must be an HTTP header name", "e.g. X-Signature"))
    if scheme == "hmac":
        if value.get("algorithm", "sha256") not in ("sha1", "sha256", "sha512"):
            found.append(("algorithm", "must be sha1, sha256 or sha512", ""))
        if value.get("encoding", "hex") not in ("hex", "base64"):
            found.append(("encoding", "must be hex or base64", ""))
        if not isinstance(value.get("prefix", ""), str):
            found.append(("prefix", "must be text", "e.g. `sha256=`"))
        if "tolerance" in value and "timestamp_header" not in value:
            found.append(("tolerance", "only applies with `timestamp_header`", ""))
    if scheme == "token":
        places = [k for k in ("header", "query", "field") if k in value]
        if len(places) != 1:
            found.append(
                ("", "needs exactly one of `header`, `query` or `field`", "e.g. query: token")
            )
        for key in ("query", "field"):
            if key in value and not (isinstance(value[key], str) and value[key]):
                found.append((key, "must be a parameter name", ""))
    for key in ("username", "webhook_id"):
        if key in value and not (isinstance(value[key], str) and value[key].strip()):
            found.append((key, "must be text (or an ${ENV_VAR} reference)", ""))
    return found


def resolve_verify(value: Any, env: Mapping[str, str], file: str) -> tuple[Any, list[Problem]]:
    """The validated block with every `${NAME}` replaced by its value, and defaults filled.

    `secret` becomes `secrets` (a list), timestamped schemes get their `tolerance`. A
    missing or empty variable is a Problem naming it (never its value).
    """
    if value == "none":
        return value, []
    problems: list[Problem] = []

    def read(path: str, item: str) -> Secret:
        match = ENV_REFERENCE.fullmatch(item)
        if match is None:
            return Secret(item)
        name = match.group(1)
        secret = env.get(name, "")
        if not secret:
            state = "is empty" if name in env else "is not set"
            problems.append(
                Problem(
                    file,
                    f"verify.{path}",
                    f"environment variable {name} {state}",
                    f"set {name} to the {value['scheme']} secret before starting the relay",
                )
            )
        return Secret(secret)

    spec = {k: v for k, v in value.items() if k not in ("secret", "secrets")}
    if "secret" in value or "secrets" in value:
        items = value["secrets"] if "secrets" in value else [value["secret"]]
        path = "secrets[{}]" if "secrets" in value else "secret"
        spec["secrets"] = [read(path.format(i), item) for i, item in enumerate(items)]
    for key in ("webhook_id", "username"):
        if key in value:
            spec[key] = str(read(key, value[key]))
    if value["scheme"] in TIMED or "timestamp_header" in value:
        spec["tolerance"] = value.get("tolerance", DEFAULT_TOLERANCE)
    if value["scheme"] == "standard-webhooks":
        for i, secret in enumerate(spec["secrets"]):
            if secret and not _standard_secret(secret):
                problems.append(
                    Problem(
                        file,
                        "verify.secrets" if "secrets" in value else "verify.secret",
                        f"secret #{i + 1} is not whsec_ followed by base64, nor whpk_ "
                        "followed by a base64 ed25519 public key",
                        "copy the whole signing secret from the sender's dashboard",
                    )
                )
    return spec, problems


def _standard_secret(secret: str) -> bool:
    try:
        if secret.startswith("whpk_"):
            # cryptography is imported only for such a key: it costs every process 6 MB.
            from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

            key = base64.b64decode(secret.removeprefix("whpk_"), validate=True)
            Ed25519PublicKey.from_public_bytes(key)
            return True
        return len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) > 0
    except (binascii.Error, ValueError):
        return False
