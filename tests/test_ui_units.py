"""The web view's parts without a server or a browser: where it binds, what it refuses, how it draws.

The app itself is exercised in-process (Starlette's test client, no socket) on a small real store;
tests/test_ui.py starts the real command and drives a browser.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image
from starlette.testclient import TestClient

import replaystore
from replaystore.cli import build_parser
from replaystore.errors import ValidationError
from replaystore.ui import bind_host, charts, create_app
from replaystore.ui.cells import as_image, png
from replaystore.ui.server import check_port, is_loopback
from replaystore.ui.sql import parse_versions
from tests.conftest import run_cli


def test_without_host_the_ui_binds_the_loopback_address_only() -> None:
    args = build_parser().parse_args(["ui"])
    assert args.host is None and bind_host(args.host) == "127.0.0.1" and is_loopback(bind_host(args.host))
    assert bind_host(build_parser().parse_args(["ui", "--host", "0.0.0.0"]).host) == "0.0.0.0"
    assert is_loopback("localhost") and not is_loopback("0.0.0.0")


@pytest.mark.parametrize("port", [0, 65536, -1, True])
def test_a_port_outside_1_to_65535_is_refused_naming_the_option(port: int) -> None:
    with pytest.raises(ValidationError, match=r"--port: must be a port number between 1 and 65535"):
        check_port(port)


@settings(max_examples=40, deadline=None)
@given(arrays(np.uint8, st.tuples(st.integers(1, 12), st.integers(1, 12), st.sampled_from([1, 3]))))
def test_thumbnails_decode_to_the_sample_scaled_to_the_full_range(pixels: np.ndarray) -> None:
    image = pixels[:, :, 0] if pixels.shape[2] == 1 else pixels  # grayscale or RGB
    decoded = np.asarray(Image.open(io.BytesIO(png(image))))
    lo, hi = int(image.min()), int(image.max())
    expected = np.zeros_like(image) if hi == lo else np.round((image.astype(float) - lo) / (hi - lo) * 255).astype(np.uint8)
    assert decoded.shape == image.shape and np.array_equal(decoded, expected)


def test_channel_first_samples_show_as_images_and_other_shapes_do_not() -> None:
    chw = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)
    shown = as_image(chw.tobytes(), [3, 4, 5], "uint8")
    assert shown is not None and shown.shape == (4, 5, 3) and np.array_equal(shown[..., 1], chw[1])
    assert as_image(b"\x00" * 24, [2, 3, 4], "uint8") is None
    assert as_image(b"\x00" * 5, [2, 3], "uint8") is None


def test_a_histogram_of_value_counts_equals_one_of_the_values() -> None:
    values = np.array([0, 1, 1, 2, 2, 2, 5])
    assert charts.histogram(values, x_label="freq") == charts.histogram(np.array([0, 1, 2, 5]), weights=[1, 2, 3, 1], x_label="freq")
    markup = charts.bars(["a", "b", "c"], {"x": [1, 2, 3], "y": [0, 1, 0]}, y_label="n", x_label="k")
    assert markup.count('class="mark"') == 6 and "<title>b · y: 1</title>" in markup


def test_time_travel_is_parsed_as_table_version_pairs() -> None:
    assert parse_versions(" a=3, b=after-task-1 ,") == {"a": 3, "b": "after-task-1"}
    with pytest.raises(ValidationError, match="versions: expected TABLE=N or TABLE=TAG, got 'a'"):
        parse_versions("a")


@pytest.fixture
def small(tmp_path: Path) -> replaystore.Store:
    store = replaystore.open(str(tmp_path / "store"))
    buffer = store.exemplars("digits", budget=10 * 16, selector="random")
    buffer.add(3, np.arange(4 * 16, dtype=np.uint8).reshape(4, 4, 4))
    store.tag("digits", store.dataset("digits").version, "first")
    return store


def test_every_page_answers_and_only_get_and_head_are_allowed(small: replaystore.Store) -> None:
    client = TestClient(create_app(small))
    before = {n: ([v.version for v in small.versions(n)], small.tags(n)) for n in small.table_names()}
    for path in ["/", "/table/digits", "/exemplars", "/exemplars/digits", "/experiences", "/curriculum", "/gere", "/priorities", "/sql?q=SELECT+*+FROM+digits"]:
        page = client.get(path)
        assert page.status_code == 200, (path, page.text[-500:])
        for method in ("POST", "PUT", "PATCH", "DELETE"):
            assert client.request(method, path).status_code == 405
    assert client.get("/table/digits").text.count('class="thumb"') == 4
    assert client.get("/table/nope").status_code == 404
    refused = client.get("/sql", params={"q": "DELETE FROM digits"})
    assert refused.status_code == 400 and "query: refused: DELETE writes data" in refused.text
    assert {n: ([v.version for v in small.versions(n)], small.tags(n)) for n in small.table_names()} == before


def test_with_a_token_every_request_must_carry_it(small: replaystore.Store) -> None:
    client = TestClient(create_app(small, token="t0ken"))
    assert client.get("/").status_code == 401
    assert client.get("/?token=t0ken").status_code == 200
    assert client.get("/gere").status_code == 200, "the token is kept in a cookie"


def test_the_ui_refuses_a_store_that_does_not_exist_and_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "nothing-here"
    proc = run_cli("ui", "--port", "1", uri=str(missing))
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and f"no store at {missing}: check --uri" in lines[0]
    assert not missing.exists()
