"""Fixtures of the data tests: an isolated dataset catalog."""

from __future__ import annotations

import pytest

from detrex_ext.data.catalog import catalog_snapshot


@pytest.fixture(autouse=True)
def isolated_catalog():
    """Every test starts and ends with the catalog it found (registrations do not leak)."""
    with catalog_snapshot():
        yield
