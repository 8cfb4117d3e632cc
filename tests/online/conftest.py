"""Fixtures of the online wing's tests."""

from __future__ import annotations

import pytest


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request, tmp_path) -> str:
    """A fresh database URL: SQLite in the test's folder, then PostgreSQL (tests/pgcluster.py)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'online.sqlite'}"
    return request.getfixturevalue("postgres").new_database()
