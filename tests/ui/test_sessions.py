"""The page's sessions and forms, over plain HTTP: the session cookie, CSRF, sign-out, and
the event stream that accepts the cookie (on both database backends)."""

from __future__ import annotations

import re
from http.cookies import SimpleCookie

import httpx

from tests.access.test_access import create_token
from tests.conftest import ADMIN_TOKEN
from tests.helpers import create_cluster
from tests.stack import Stack


class Browserless:
    """A person's session, driven by hand: the cookie and the CSRF token of its forms."""

    def __init__(self, base_url: str) -> None:
        self.http = httpx.AsyncClient(base_url=base_url, timeout=30, follow_redirects=False)
        self.cookie = ""
        self.csrf = ""

    async def sign_in(self, token: str, **headers: str) -> httpx.Response:
        form = await self.http.get("/ui/sign-in")
        csrf = _csrf(form.text)
        answer = await self.http.post(
            "/ui/sign-in",
            data={"token": token, "csrf_token": csrf},
            headers={"Cookie": f"tandem_sign_in={form.cookies['tandem_sign_in']}", **headers},
        )
        if answer.status_code == 303:
            self.cookie = _cookie(answer)["tandem_session"].value
            page = await self.get(answer.headers["location"])
            self.csrf = _csrf(page.text)
        return answer

    async def get(self, path: str, **kwargs: object) -> httpx.Response:
        return await self.http.get(path, headers={"Cookie": f"tandem_session={self.cookie}"})

    async def post(self, path: str, data: dict[str, str]) -> httpx.Response:
        return await self.http.post(
            path, data=data, headers={"Cookie": f"tandem_session={self.cookie}"}
        )


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, html[:500]
    return found.group(1)


def _cookie(response: httpx.Response) -> SimpleCookie:
    jar: SimpleCookie = SimpleCookie()
    for header in response.headers.get_list("set-cookie"):
        jar.load(header)
    return jar


async def state_of(client: httpx.AsyncClient, cluster_id: str) -> tuple[str, str | None]:
    pair = (await client.get(f"/v1/clusters/{cluster_id}")).json()
    return pair["state"], pair["last_operation_id"]


async def test_the_session_cookie_is_httponly_strict_and_secure_over_https(
    live_stack: Stack,
) -> None:
    person = Browserless(live_stack.base_url)
    plain = await person.sign_in(ADMIN_TOKEN)
    assert plain.status_code == 303
    cookie = _cookie(plain)["tandem_session"]
    assert cookie["httponly"] and cookie["samesite"] == "strict" and cookie["path"] == "/"
    assert not cookie["secure"]
    # Behind a proxy that terminates TLS (uvicorn trusts X-Forwarded-Proto from loopback).
    behind_tls = await Browserless(live_stack.base_url).sign_in(
        ADMIN_TOKEN, **{"X-Forwarded-Proto": "https"}
    )
    assert _cookie(behind_tls)["tandem_session"]["secure"]


async def test_a_bad_token_does_not_sign_in(live_stack: Stack) -> None:
    person = Browserless(live_stack.base_url)
    refused = await person.sign_in("tdm_" + "x" * 43)
    assert refused.status_code == 401
    assert "not valid" in refused.text and "tandem_session" not in _cookie(refused)
    assert (await person.get("/ui/")).headers["location"] == "/ui/sign-in"


async def test_a_form_post_without_the_csrf_token_is_refused(
    client: httpx.AsyncClient, live_stack: Stack
) -> None:
    pair = await create_cluster(client)
    person = Browserless(live_stack.base_url)
    await person.sign_in(ADMIN_TOKEN)
    form = {"confirm_name": pair["name"], "idempotency_key": "csrf-test"}
    for csrf in ({}, {"csrf_token": "not-the-one"}):
        refused = await person.post(f"/ui/pairs/{pair['id']}/failover", {**form, **csrf})
        assert refused.status_code == 403, refused.text
    assert await state_of(client, pair["id"]) == ("primary-active", None)
    # The same form with the session's token goes through.
    accepted = await person.post(
        f"/ui/pairs/{pair['id']}/failover", {**form, "csrf_token": person.csrf}
    )
    assert accepted.status_code == 303, accepted.text
    assert (await state_of(client, pair["id"]))[1] is not None


async def test_a_post_from_a_signed_out_session_is_refused(
    client: httpx.AsyncClient, live_stack: Stack
) -> None:
    pair = await create_cluster(client)
    person = Browserless(live_stack.base_url)
    await person.sign_in(ADMIN_TOKEN)
    stream = f"/v1/events/stream?cluster_id={pair['id']}"
    async with person.http.stream(
        "GET", stream, headers={"Cookie": f"tandem_session={person.cookie}"}
    ) as live:
        assert live.status_code == 200
        assert live.headers["content-type"].startswith("text/event-stream")
    signed_out = await person.post("/ui/sign-out", {"csrf_token": person.csrf})
    assert signed_out.status_code == 303
    replay = await person.post(
        f"/ui/pairs/{pair['id']}/failover",
        {"csrf_token": person.csrf, "confirm_name": pair["name"]},
    )
    assert replay.status_code == 401
    assert (await person.get(stream)).status_code == 401
    assert await state_of(client, pair["id"]) == ("primary-active", None)


async def test_the_cookie_alone_changes_nothing_in_the_api(
    client: httpx.AsyncClient, live_stack: Stack
) -> None:
    pair = await create_cluster(client)
    person = Browserless(live_stack.base_url)
    await person.sign_in(ADMIN_TOKEN)
    refused = await person.http.post(
        f"/v1/clusters/{pair['id']}/failover",
        json={},
        headers={"Cookie": f"tandem_session={person.cookie}", "Idempotency-Key": "cookie-only"},
    )
    assert refused.status_code == 401
    assert (await person.get(f"/v1/clusters/{pair['id']}")).status_code == 401
    assert await state_of(client, pair["id"]) == ("primary-active", None)


async def test_a_revoked_token_ends_its_sessions(
    client: httpx.AsyncClient, live_stack: Stack
) -> None:
    operator = await create_token(client, "operator")
    person = Browserless(live_stack.base_url)
    await person.sign_in(operator["token"])
    assert (await person.get("/ui/")).status_code == 200
    assert (await client.delete(f"/v1/tokens/{operator['id']}")).status_code == 204
    ended = await person.get("/ui/")
    assert ended.status_code == 303 and "ended" in ended.headers["location"]
    assert (await person.get("/v1/events/stream")).status_code == 401
