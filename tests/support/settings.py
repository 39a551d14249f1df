"""Building Settings in tests from plain values, as the environment would give them."""

from __future__ import annotations

from typing import Any

from service.settings import Settings


def settings_from(**values: Any) -> Settings:
    """Settings from these values only: no .env file is read."""
    values.setdefault("_env_file", None)
    return Settings(**values)
