"""Kartra's key and password go to KARTRA_API_URL and nowhere else, even when it redirects."""

import pytest
from werkzeug.wrappers import Request, Response

from relay.kartra import KartraClient
from tests.kartra.conftest import API_KEY, API_PASSWORD


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_not_followed_with_the_credentials(wsgi, credentials, status):
    received: list[bytes] = []

    @Request.application
    def elsewhere(request: Request) -> Response:
        received.append(request.get_data() + request.query_string)
        return Response('{"status": "Success"}', content_type="application/json")

    target = wsgi(elsewhere)

    @Request.application
    def redirecting(request: Request) -> Response:
        return Response("", status=status, headers={"Location": target + "/api"})

    with KartraClient(wsgi(redirecting) + "/api", timeout=(2, 2)) as client:
        call = client.call(credentials, {"cmd": "search_lead", "lead": {"email": "a@b.co"}})

    assert received == []
    assert call.http_status == status
    assert call.kind == "transient" and call.error == f"HTTP {status}: redirect not followed"
    assert API_KEY not in repr(call) and API_PASSWORD not in repr(call)
