"""The `tiny_fsdd` fixture (see fsdd_fixture.py)."""

import pytest
from fsdd_fixture import write_dataset


@pytest.fixture
def tiny_fsdd(tmp_path, monkeypatch):
    """The data_dir of a tiny FSDD (2 speakers x 3 digits x 4 takes = 24 recordings of 0.12-0.15 s)."""
    return write_dataset(tmp_path / "data", monkeypatch)
