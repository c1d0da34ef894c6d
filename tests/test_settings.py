"""Settings: each one is read somewhere; a setting nothing reads only misleads."""

from __future__ import annotations

import re

from app.config import Settings
from tests.stack import ROOT


def test_every_setting_is_read() -> None:
    sources = [
        path.read_text() for path in (ROOT / "app").rglob("*.py") if path.name != "config.py"
    ]
    unread = [
        name
        for name in Settings.model_fields
        if not any(re.search(rf"\.{name}\b", source) for source in sources)
    ]
    assert unread == []
