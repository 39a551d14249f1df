"""Who gets in: sign-in, the session cookie, CSRF and the open (development) mode."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from service.app import create_app
from tests.support.app import app_client, make_settings
from tests.support.dashboard import API_KEY, SESSION_SECRET, csrf_from
from tests.support.settings import settings_from

PASSWORD = "correct horse battery staple"
_ZERO_ID = "00000000-0000-0000-0000-000000000000"


async def _sign_in(client: httpx.AsyncClient, secret: str, **form: str) -> httpx.Response:
    return await client.post("/dashboard/login", data={"secret": secret, **form})


def _set_cookie(response: httpx.Response) -> str:
    (cookie,) = response.headers.get_list("set-cookie")
    return cookie


async def test_without_keys_or_password_the_dashboard_is_open(client: httpx.AsyncClient) -> None:
    response = await client.get("/dashboard")
    assert response.status_code == 200
    assert "open: no sign-in" in response.text
    assert "Sign out" not in response.text


async def test_pages_come_with_a_strict_content_security_policy(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/dashboard")
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy
    assert "script-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert response.headers["cache-control"] == "no-store"
    # Nothing on the page points anywhere but the service itself.
    assert "http://" not in response.text
    assert "https://" not in response.text


async def test_a_person_who_is_not_signed_in_is_sent_to_sign_in(
    secured: httpx.AsyncClient,
) -> None:
    response = await secured.get("/dashboard/notification", params={"id": _ZERO_ID})
    assert response.status_code == 303
    assert response.headers["location"] == (
        "/dashboard/login?next=%2Fdashboard%2Fnotification%3Fid%3D" + _ZERO_ID
    )
    # The page's script gets a plain 401 instead of a sign-in form to swap in.
    fragment = await secured.get("/dashboard", headers={"X-Dashboard-Fragment": "live"})
    assert fragment.status_code == 401
    # A bearer key is for the API, not a way into the dashboard.
    with_key = await secured.get("/dashboard", headers={"Authorization": f"Bearer {API_KEY}"})
    assert with_key.status_code == 303


async def test_a_wrong_key_is_refused_and_opens_no_session(secured: httpx.AsyncClient) -> None:
    response = await _sign_in(secured, "ops-key-0123456789abcde")  # a prefix of the key
    assert response.status_code == 401
    assert "not a valid API key" in response.text
    assert "set-cookie" not in response.headers
    assert (await secured.get("/dashboard")).status_code == 303


async def test_a_key_opens_a_strict_http_only_session(secured: httpx.AsyncClient) -> None:
    response = await _sign_in(secured, API_KEY)
    assert response.status_code == 303
    assert response.headers["location"] == "/dashboard"
    cookie = _set_cookie(response).lower()
    assert cookie.startswith("dashboard_session=")
    assert "httponly" in cookie
    assert "samesite=strict" in cookie
    assert "path=/dashboard;" in cookie
    assert "secure" not in cookie  # development: plain http on localhost must work
    page = await secured.get("/dashboard")
    assert page.status_code == 200
    assert "signed in as <strong>ops</strong>" in page.text


async def test_sign_in_goes_back_to_the_page_asked_for_but_never_elsewhere(
    secured: httpx.AsyncClient,
) -> None:
    asked = f"/dashboard/notification?id={_ZERO_ID}"
    response = await _sign_in(secured, API_KEY, next=asked)
    assert response.headers["location"] == asked
    for elsewhere in ("https://evil.example/", "//evil.example/dashboard", "/metrics"):
        response = await _sign_in(secured, API_KEY, next=elsewhere)
        assert response.headers["location"] == "/dashboard"


async def test_the_sign_in_page_sends_a_signed_in_person_on(secured: httpx.AsyncClient) -> None:
    asked = f"/dashboard/notification?id={_ZERO_ID}"
    form = await secured.get("/dashboard/login", params={"next": asked})
    assert form.status_code == 200
    assert 'id="secret"' in form.text
    assert f'name="next" value="{asked}"' in form.text.replace("&amp;", "&")
    await _sign_in(secured, API_KEY)
    again = await secured.get("/dashboard/login", params={"next": asked})
    assert again.status_code == 303
    assert again.headers["location"] == asked
    astray = await secured.get("/dashboard/login", params={"next": "https://evil.example/"})
    assert astray.headers["location"] == "/dashboard"


async def test_an_open_dashboard_has_no_sign_in_to_do(client: httpx.AsyncClient) -> None:
    page = await client.get("/dashboard/login")
    assert page.status_code == 303
    assert page.headers["location"] == "/dashboard"
    asked = f"/dashboard/notification?id={_ZERO_ID}"
    posted = await client.post("/dashboard/login", data={"secret": "anything", "next": asked})
    assert posted.status_code == 303
    assert posted.headers["location"] == asked
    assert "set-cookie" not in posted.headers  # nothing to remember


async def test_search_and_retry_send_a_signed_out_person_to_sign_in(
    secured: httpx.AsyncClient,
) -> None:
    search = await secured.get("/dashboard/search", params={"q": "ada@example.com"})
    assert search.status_code == 303
    assert search.headers["location"] == (
        "/dashboard/login?next=%2Fdashboard%2Fsearch%3Fq%3Dada%2540example.com"
    )
    # A form post is no page to come back to: after signing in, the overview.
    retry = await secured.post("/dashboard/retry", data={"id": _ZERO_ID, "csrf": "any"})
    assert retry.status_code == 303
    assert retry.headers["location"] == "/dashboard/login?next=%2Fdashboard"


async def test_retry_of_something_that_is_not_an_id_says_so(secured: httpx.AsyncClient) -> None:
    await _sign_in(secured, API_KEY)
    token = csrf_from((await secured.get("/dashboard")).text)
    response = await secured.post("/dashboard/retry", data={"id": "42", "csrf": token})
    assert response.status_code == 303
    assert response.headers["location"] == "/dashboard"
    page = await secured.get("/dashboard")
    assert "That is not a notification id." in page.text


async def test_the_dashboard_password_signs_in_too(db_url: str) -> None:
    settings = make_settings(db_url, dashboard_password=PASSWORD)
    async with app_client(settings) as client:
        assert (await client.get("/dashboard")).status_code == 303
        assert (await _sign_in(client, "not the password")).status_code == 401
        assert (await _sign_in(client, PASSWORD)).status_code == 303
        page = await client.get("/dashboard")
        assert "signed in as <strong>password</strong>" in page.text


async def test_a_session_ends_when_its_key_is_no_longer_configured(db_url: str) -> None:
    before = make_settings(db_url, api_keys=f"ops:{API_KEY}", session_secret=SESSION_SECRET)
    async with app_client(before) as client:
        await _sign_in(client, API_KEY)
        cookies = httpx.Cookies(client.cookies)
    rotated = make_settings(
        db_url, api_keys="ops:a-brand-new-key-0123456789", session_secret=SESSION_SECRET
    )
    async with app_client(rotated) as client:
        client.cookies = cookies
        assert (await client.get("/dashboard")).status_code == 303


async def test_a_tampered_cookie_is_ignored(secured: httpx.AsyncClient) -> None:
    await _sign_in(secured, API_KEY)
    value = secured.cookies["dashboard_session"]
    secured.cookies.clear()
    secured.cookies.set("dashboard_session", value[:-2] + "xx", path="/dashboard")
    assert (await secured.get("/dashboard")).status_code == 303


async def test_production_cookies_are_secure(db_url: str) -> None:
    settings = settings_from(
        database_url=db_url,
        environment="production",
        api_keys=f"ops:{API_KEY}",
        email_provider="postmark",
        email_api_token="token",
    )
    transport = httpx.ASGITransport(app=create_app(settings))
    async with httpx.AsyncClient(transport=transport, base_url="https://service.test") as client:
        response = await _sign_in(client, API_KEY)  # touches no app state: no lifespan needed
        assert "; secure" in _set_cookie(response).lower()


@pytest.mark.parametrize(
    ("headers", "token"),
    [
        ({}, None),
        ({}, "not-the-token"),
        ({"Sec-Fetch-Site": "cross-site"}, "right"),
        ({"Sec-Fetch-Site": "same-site"}, "right"),
        ({"Origin": "https://evil.example"}, "right"),
    ],
    ids=["no-token", "wrong-token", "cross-site", "sibling-site", "foreign-origin"],
)
async def test_retry_needs_the_session_token_and_the_dashboard_origin(
    secured: httpx.AsyncClient, headers: dict[str, str], token: str | None
) -> None:
    await _sign_in(secured, API_KEY)
    right = csrf_from((await secured.get("/dashboard")).text)
    form: dict[str, Any] = {"id": _ZERO_ID}
    if token is not None:
        form["csrf"] = right if token == "right" else token
    response = await secured.post("/dashboard/retry", data=form, headers=headers)
    assert response.status_code == 403
    assert "Reload the page" in response.text


async def test_retry_from_the_dashboard_itself_is_accepted(secured: httpx.AsyncClient) -> None:
    await _sign_in(secured, API_KEY)
    token = csrf_from((await secured.get("/dashboard")).text)
    headers = {"Sec-Fetch-Site": "same-origin", "Origin": "http://service.test"}
    response = await secured.post(
        "/dashboard/retry", data={"id": _ZERO_ID, "csrf": token}, headers=headers
    )
    assert response.status_code == 303
    page = await secured.get(response.headers["location"])
    assert f"notification {_ZERO_ID} does not exist" in page.text  # the flash message


async def test_sign_in_from_another_site_is_refused(secured: httpx.AsyncClient) -> None:
    response = await secured.post(
        "/dashboard/login", data={"secret": API_KEY}, headers={"Sec-Fetch-Site": "cross-site"}
    )
    assert response.status_code == 403
    assert "set-cookie" not in response.headers


async def test_sign_out_ends_the_session(secured: httpx.AsyncClient) -> None:
    await _sign_in(secured, API_KEY)
    token = csrf_from((await secured.get("/dashboard")).text)
    refused = await secured.post("/dashboard/logout", data={"csrf": "forged"})
    assert refused.status_code == 403
    response = await secured.post("/dashboard/logout", data={"csrf": token})
    assert response.status_code == 303
    assert response.headers["location"] == "/dashboard/login"
    assert (await secured.get("/dashboard")).status_code == 303


async def test_the_dashboard_opens_no_hole_in_the_api(secured: httpx.AsyncClient) -> None:
    await _sign_in(secured, API_KEY)
    # The session cookie is scoped to /dashboard, and the API wants its bearer key.
    assert (await secured.get("/notifications")).status_code == 401
    assert (await secured.get("/dashboard/static/dashboard.css")).status_code == 200
    assert (await secured.get("/dashboard/static/nothing-here.js")).status_code == 401
    assert (await secured.get("/dashboard/elsewhere")).status_code == 401
    typed = await secured.get("/dashboard/")
    assert typed.status_code in (301, 307)
    assert typed.headers["location"].endswith("/dashboard")
