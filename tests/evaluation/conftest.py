"""Fixtures of the data tests: an isolated dataset catalog."""

from __future__ import annotations

import pytest

from detrex_ext.data import DatasetCatalog, MetadataCatalog


@pytest.fixture(autouse=True)
def isolated_catalog():
    """Every test starts and ends with the catalog it found (registrations do not leak)."""
    datasets, metadata = dict(DatasetCatalog.data), dict(MetadataCatalog.data)
    yield
    DatasetCatalog.data.clear()
    DatasetCatalog.data.update(datasets)
    MetadataCatalog.data.clear()
    MetadataCatalog.data.update(metadata)
