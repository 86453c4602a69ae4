"""Every vector in verify_vectors.json: valid ones pass, invalid ones raise Rejected."""

import pytest

from relay.ingest.verify import Rejected, verify
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
