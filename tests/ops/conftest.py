"""The browser fixtures of tests/browser (module-scoped Chromium, screenshots) for tests/ops."""

from tests.browser.conftest import browser, shot  # noqa: F401
