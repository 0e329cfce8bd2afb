"""The flows' parts that need no Prefect server: parameter checking, index columns, deployments
from prefect.yaml, flow loading, `serve`'s refusal and report tables. The flows themselves run in
tests/test_flows.py, under Prefect's test server (marked slow)."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from conftest import run_cli

from replaystore.errors import ValidationError
from replaystore.flows.deployments import deployment_specs, load_flow, runner_deployments
from replaystore.flows.index import wanted_indexes
from replaystore.flows.parameters import checked
from replaystore.flows.prune import prune
from replaystore.flows.reporting import markdown_table


def test_the_index_flow_takes_its_columns_from_the_schema_files() -> None:
    from replaystore.schemas import Kind

    assert wanted_indexes(Kind.EXEMPLARS) == {"buffer": "BITMAP", "sample_id": "BTREE", "class_id": "BITMAP", "task_id": "BITMAP"}
    assert wanted_indexes("priorities") == {"source": "BITMAP", "sample_id": "BTREE"}
    assert wanted_indexes(Kind.EXPERIENCES) == {}  # ExperienceMemory.build_index builds those
    assert wanted_indexes(None) == wanted_indexes("not_a_kind") == {}


def test_checked_validates_against_the_signature_and_keeps_it() -> None:
    @checked
    def f(n: int, hours: float = 1.0) -> tuple[int, float]:
        return n, hours

    assert f("3", hours="2.5") == (3, 2.5)
    with pytest.raises(ValidationError) as err:
        f()
    assert err.value.field == "parameters"
    assert list(inspect.signature(f).parameters) == ["n", "hours"]


def test_every_deployment_of_prefect_yaml_serves_its_flow_with_its_schedule() -> None:
    served = {f"{d.flow_name}/{d.name}": d for d in runner_deployments("/srv/replay")}
    assert {name: [s.schedule.cron for s in d.schedules] for name, d in served.items()} == {
        "distill/distill-on-demand": [],
        "index/index-hourly": ["0 * * * *"],
        "prune/prune-nightly": ["30 2 * * *"],
        "stream/stream-on-demand": [],
    }
    for spec in deployment_specs():
        flow_params = load_flow(spec["entrypoint"]).parameters.properties
        assert set(spec["parameters"]) <= set(flow_params), spec["name"]
    assert all(d.parameters["store_uri"] == "/srv/replay" for d in served.values())
    assert served["prune/prune-nightly"].parameters["retention_hours"] == 168


def test_load_flow_takes_module_paths_and_refuses_file_paths() -> None:
    assert load_flow("replaystore.flows.prune.prune") is prune
    with pytest.raises(ValidationError, match="module path"):
        load_flow("flows/prune.py:prune")  # the form before flows/ installed as replaystore.flows


def test_serve_refuses_a_missing_prefect_file_before_starting_anything(tmp_path: Path) -> None:
    proc = run_cli("serve", "--prefect-file", str(tmp_path / "none.yaml"), uri=str(tmp_path / "store"))
    assert proc.returncode == 2  # refused by the parser, before a store is opened or Prefect imported
    assert proc.stderr.splitlines() == [f"error: argument --prefect-file: no file '{tmp_path / 'none.yaml'}': check the path (see 'replaystore serve --help')"]
    assert not (tmp_path / "store").exists()


def test_markdown_table_escapes_cells() -> None:
    text = markdown_table([{"table": "a|b", "n": 1.23456789}, {"table": "c", "extra": None}])
    assert text.splitlines() == [
        "| table | n | extra |",
        "|---|---|---|",
        "| a\\|b | 1.23457 |  |",
        "| c |  |  |",
    ]
    assert markdown_table([]) == "_nothing to report_"
