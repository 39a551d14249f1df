"""Fixtures of the end-to-end tests: the fake provider the service processes talk to."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.fake_provider import FakeProvider


@pytest.fixture
def provider() -> Iterator[FakeProvider]:
    """A fake Postmark and Mailpit; Postmark calls must carry ``provider.token``."""
    with FakeProvider(token="e2e-server-token") as fake:
        yield fake
