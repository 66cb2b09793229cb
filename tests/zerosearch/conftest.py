"""Fixtures shared by the launcher tests."""

import pytest


@pytest.fixture()
def data_dir(tmp_path):
    """A DATA_PATH folder the launcher accepts: empty train and test parquet files."""
    d = tmp_path / "ZeroSearch_dataset"
    d.mkdir()
    (d / "train.parquet").write_bytes(b"")
    (d / "test.parquet").write_bytes(b"")
    return d
