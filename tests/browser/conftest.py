"""One headless Chromium per test module (playwright-core bridge); skipped with the reason when
Chromium, node or the npm pieces are missing."""

from __future__ import annotations

import pytest

from teleop.testing.browser import Browser, unavailable_reason


@pytest.fixture(scope="module")
def browser():
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    b = Browser()
    try:
        yield b
    finally:
        b.close()
