"""Every vector in verify_vectors.json: valid ones pass, invalid ones raise Rejected;
a valid one with any of its headers made hostile is rejected or passes, never crashes."""

import contextlib
import dataclasses

import pytest

from relay.ingest.verify import Ping, Rejected, verify
from tests.ingest.verify.conftest import VECTORS, vector_delivery, vector_spec


@pytest.mark.parametrize(
    "vector", VECTORS, ids=[f"{v['scheme']}-{i}-{v['expect']}" for i, v in enumerate(VECTORS)]
)
def test_vector(vector):
    spec, delivery = vector_spec(vector), vector_delivery(vector)
    if vector["expect"] == "valid":
        verify(spec, delivery)
    else:
        with pytest.raises(Rejected):
            verify(spec, delivery)


def test_every_scheme_of_the_vectors_is_covered():
    schemes = {v["scheme"] for v in VECTORS}
    assert len(VECTORS) >= 90 and len(schemes) == 12


# Header values arrive as latin-1 text: digits that are not ASCII, values too long for
# `int`, broken base64 and key=value lists, bytes above 0x7f.
HOSTILE = ["", "\xb2", "\u0663", "9" * 5000, "t=\xb2,v1=ab", "t=1,v1=zz", "v1,\xff", "v1a,!!!"]
HOSTILE += ["Basic \xff\xfe", "Basic ====", "sha256=\xff", "=", ",", "\x00", "1e309", "-1"]


@pytest.mark.parametrize("vector", [v for v in VECTORS if v["expect"] == "valid"])
def test_a_hostile_header_is_a_rejection_never_a_crash(vector):
    """A 500 instead of a 401 makes a sender retry, and a wrong one never learns why."""
    spec, delivery = vector_spec(vector), vector_delivery(vector)
    for name in [*delivery.headers, "authorization"]:
        for value in HOSTILE:
            hostile = dataclasses.replace(delivery, headers={**delivery.headers, name: value})
            with contextlib.suppress(Rejected, Ping):
                verify(spec, hostile)
