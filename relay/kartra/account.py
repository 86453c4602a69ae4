"""What a Kartra account has: its tags, lists, sequences and custom fields.

`python -m relay check --kartra` compares these with the names the mappings use, so a
tag missing from the account is found before deploy rather than by a 212 on a sale.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from relay.config import Config, ConfigError
from relay.kartra.client import Credentials, KartraClient

# kind in Mapping.names() -> (discovery command, key of its answer, singular for messages)
DISCOVERY = {
    "tags": ("retrieve_account_tags", "account_tags", "tag"),
    "lists": ("retrieve_account_lists", "account_lists", "list"),
    "sequences": ("retrieve_account_sequences", "account_sequences", "sequence"),
    "custom_fields": ("retrieve_custom_fields", "custom_fields", "custom field"),
}


class DiscoveryError(ConfigError):
    """Kartra did not answer a discovery command usefully."""


def account_names(client: KartraClient, credentials: Credentials) -> dict[str, set[str]]:
    names: dict[str, set[str]] = {}
    for kind, (cmd, key, _) in DISCOVERY.items():
        call = client.call(
            credentials,
            {
                "app_id": credentials.app_id,
                "api_key": credentials.api_key,
                "api_password": credentials.api_password,
                "actions": [{"cmd": cmd}],
            },
        )
        values = _find(call.response, key)
        if call.error or values is None:
            raise DiscoveryError(f"{cmd}: {call.error or 'no ' + key + ' in the answer'}")
        names[kind] = {_name(v) for v in values}
    return names


def _find(response: Any, key: str) -> list | None:
    """The list under `key`, at the top level or inside the command's action result."""
    if not isinstance(response, dict):
        return None
    if isinstance(response.get(key), list):
        return response[key]
    for action in response.get("actions") or []:
        for result in action.values() if isinstance(action, dict) else ():
            if isinstance(result, dict) and isinstance(result.get(key), list):
                return result[key]
    return None


def _name(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("field_identifier") or value.get("name") or "")
    return str(value)


def missing_names(
    config: Config, mappings: Iterable[Any], client: KartraClient | None = None
) -> list[str]:
    """One line per tag, list, sequence or custom field a mapping names that its
    account lacks, and one per account Kartra would not answer for (bad credentials):
    the other accounts are still checked."""
    if config.dry_run:
        raise ConfigError(
            "check --kartra: set KARTRA_APP_ID, KARTRA_API_KEY and "
            "KARTRA_API_PASSWORD to ask Kartra"
        )
    client = client or KartraClient(config.kartra_url, test_mode=config.kartra_test_mode)
    known: dict[str, dict[str, set[str]] | None] = {}
    missing = []
    for mapping in mappings:
        for name in sorted(mapping.accounts):
            account = config.accounts.get(name)
            if account is None:
                missing.append(f"account {name!r} ({mapping.file}) has no credentials")
                continue
            if name not in known:
                credentials = Credentials(
                    config.kartra_app_id, account.api_key, account.api_password
                )
                try:
                    known[name] = account_names(client, credentials)
                except DiscoveryError as exc:
                    known[name] = None
                    missing.append(f"account {name!r} could not be read: {exc}")
            names = known[name]
            if names is None:
                continue
            for kind, wanted in mapping.names(name).items():
                for item in sorted(wanted - names.get(kind, set())):
                    missing.append(
                        f"{DISCOVERY[kind][2]} {item!r} ({mapping.file}, account {name})"
                    )
    return missing
