from tests.ui.browser import browser, page  # noqa: F401  (a real Chromium)
