from dataclasses import dataclass, field

import pytest

from relay.config import Account, Config, ConfigError
from relay.kartra.account import missing_names
from relay.kartra.fake import FakeKartra
from tests.kartra.conftest import API_KEY, API_PASSWORD, APP_ID


@dataclass
class StubMapping:
    """Stands in for relay.mapping.Mapping: only what the check reads."""

    wanted: dict = field(default_factory=dict)
    account: str = "default"
    file: str = "mappings/shop.yaml"

    @property
    def accounts(self):
        return {self.account}

    def names(self, account=None):
        assert account in (None, self.account)
        return self.wanted


def config(url, **overrides):
    values = {
        "kartra_url": url,
        "kartra_app_id": APP_ID,
        "accounts": {"default": Account("default", API_KEY, API_PASSWORD)},
    }
    return Config(**{**values, **overrides})


def test_lists_what_the_account_lacks(serve):
    fake = FakeKartra(
        app_id=APP_ID,
        accounts={API_KEY: API_PASSWORD},
        tags=["Customer"],
        lists=["News"],
        sequences={"Onboarding": ["1"]},
        custom_fields=["source"],
    )
    url = serve(fake)
    mapping = StubMapping(
        {
            "tags": {"Customer", "VIP"},
            "lists": {"News"},
            "sequences": {"Welcome"},
            "custom_fields": {"source", "plan"},
        }
    )
    assert missing_names(config(url), [mapping]) == [
        "tag 'VIP' (mappings/shop.yaml, account default)",
        "sequence 'Welcome' (mappings/shop.yaml, account default)",
        "custom field 'plan' (mappings/shop.yaml, account default)",
    ]


def test_nothing_missing(serve):
    fake = FakeKartra(app_id=APP_ID, accounts={API_KEY: API_PASSWORD}, tags=["Customer"])
    assert missing_names(config(serve(fake)), [StubMapping({"tags": {"Customer"}})]) == []


def test_an_account_without_credentials_is_reported(serve):
    fake = FakeKartra(app_id=APP_ID, accounts={API_KEY: API_PASSWORD})
    missing = missing_names(config(serve(fake)), [StubMapping(account="shop2")])
    assert missing == ["account 'shop2' (mappings/shop.yaml) has no credentials"]


def test_bad_credentials_name_the_account_and_the_others_are_still_checked(serve):
    fake = FakeKartra(app_id=APP_ID, accounts={API_KEY: API_PASSWORD}, tags=["Customer"])
    accounts = {
        "default": Account("default", API_KEY, API_PASSWORD),
        "shop_eu": Account("shop_eu", API_KEY, "nope"),
    }
    missing = missing_names(
        config(serve(fake), accounts=accounts),
        [
            StubMapping({"tags": {"X"}}, account="shop_eu", file="mappings/eu.yaml"),
            StubMapping({"tags": {"Customer", "VIP"}}),
        ],
    )
    assert missing == [
        "account 'shop_eu' could not be read: retrieve_account_tags: Kartra 233: "
        "API password is not valid",
        "tag 'VIP' (mappings/shop.yaml, account default)",
    ]


def test_needs_credentials():
    with pytest.raises(ConfigError, match="KARTRA_APP_ID"):
        missing_names(Config(), [])
