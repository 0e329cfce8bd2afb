"""Each predicate of `replaystore.lance_errors` against the error the pinned pylance really raises,
so a Lance release that rewords one fails here (and names the predicate) before it misleads a retry.
`is_denied` is exercised by `test_s3_readonly.py` (a real 403) and `is_vanished_tag` by the pin/cleanup
races in `test_reliability.py`."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import lance
import pyarrow as pa
import pytest

from replaystore import lance_errors as le

ROWS = pa.table({"k": [1, 2, 3]})


def _raised(action) -> BaseException:
    with pytest.raises(Exception) as info:
        action()
    return info.value


@pytest.fixture
def uri(tmp_path: Path) -> str:
    path = str(tmp_path / "t.lance")
    lance.write_dataset(ROWS, path)
    return path


def test_a_concurrent_commit_is_a_conflict(uri: str) -> None:
    first, second = lance.dataset(uri), lance.dataset(uri)
    first.update_config({"x": "1"})
    exc = _raised(lambda: second.update_config({"x": "2"}))
    assert le.is_conflict(exc) and not le.is_denied(exc) and not le.is_not_found(exc)


def test_a_missing_dataset_version_and_tag_are_not_found(tmp_path: Path, uri: str) -> None:
    assert le.is_not_found(_raised(lambda: lance.dataset(str(tmp_path / "nothing.lance"))))
    assert le.is_unknown_version(_raised(lambda: lance.dataset(uri, version=99)))
    assert le.is_unknown_version(_raised(lambda: lance.dataset(uri, version="no-such-tag")))


def test_creating_an_existing_dataset_says_it_exists(uri: str) -> None:
    exc = _raised(lambda: lance.write_dataset(ROWS, uri, mode="create"))
    assert le.is_already_exists(exc) and not le.is_conflict(exc)


def test_a_bad_predicate_is_user_input_naming_the_column(uri: str) -> None:
    exc = _raised(lambda: lance.dataset(uri).to_table(filter="colour = 1"))
    reason = le.user_input(exc)
    assert reason is not None and le.missing_column(reason) == "colour"
    assert le.user_input(ValueError("something else")) is None


def test_a_commit_onto_a_cleaned_up_version_says_the_version_is_gone(uri: str) -> None:
    old = lance.dataset(uri)
    lance.write_dataset(ROWS, uri, mode="append")
    lance.write_dataset(ROWS, uri, mode="append")
    lance.dataset(uri).cleanup_old_versions(older_than=timedelta(0))  # removes the version `old` read
    operation = lance.LanceOperation.Merge([f.metadata for f in old.get_fragments()], old.lance_schema)
    exc = _raised(lambda: lance.LanceDataset.commit(uri, operation, read_version=old.version, max_retries=0))
    assert le.is_version_gone(exc), exc
