"""The wheel is the product: built from this repository and installed without it, it carries the
contracts, the flows (as `replaystore.flows`) and the deployment template, and installs nothing
under a generic top-level name."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
KINDS = sorted(p.stem for p in (ROOT / "schemas").glob("*.json"))

pytestmark = pytest.mark.slow

# Run inside the installed wheel: one append per kind, with a row built from the kind's own contract.
APPEND_EVERY_KIND = """
import json, sys
import replaystore
from replaystore.schemas import known_kinds, load_spec

def value(field, params):
    checks = field.checks
    if field.type == "string":
        return checks["in"][0] if "in" in checks else "x"
    if field.type == "binary":
        return b"x"
    if field.type.startswith(("int", "uint")):
        return max(1, checks.get("min", 1))
    if field.type.startswith("float"):
        return 0.5
    if field.type.startswith("list<"):
        return [0.5]
    if field.type.startswith("fixed_size_list<"):
        return [0.5] * int(params[field.type.rstrip(">").rsplit("$", 1)[1]])
    raise AssertionError(f"no sample value for {field.name}: {field.type}")

store = replaystore.open("store")
for kind in known_kinds():
    spec = load_spec(kind)
    row = {f.name: value(f, spec.params) for f in spec.fields if not f.nullable and f.default is None}
    store.append(kind, [row])
print(json.dumps({"file": replaystore.__file__, "kinds": known_kinds(), "rows": {k: store.count(k) for k in known_kinds()}}))
"""

IMPORT_FLOWS = """
import json
from replaystore.flows import deployments, distill, index, prune, stream
flows = [deployments.load_flow(s["entrypoint"]).name for s in deployments.deployment_specs()]
try:
    import flows as generic
    generic_found = generic.__file__
except ModuleNotFoundError:
    generic_found = None
print(json.dumps({"flows": flows, "prefect_file": str(deployments.PREFECT_FILE), "generic": generic_found}))
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from the repository, installed into a bare folder (no dependencies, no checkout)."""
    dist, site = tmp_path_factory.mktemp("dist"), tmp_path_factory.mktemp("site")
    source = tmp_path_factory.mktemp("source") / "replaystore"  # a copy, so no stale build/ of the checkout leaks in
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".*", "build", "*.egg-info", "__pycache__", "replaystore-data", "*-output"))
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(source)]
    subprocess.run(build, check=True, capture_output=True, timeout=300)
    (wheel,) = dist.glob("replaystore-*.whl")
    install = [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)]
    subprocess.run(install, check=True, capture_output=True, timeout=300)
    return site


def run_installed(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Python without site processing (no editable finder of the checkout), seeing only the installed
    wheel and the dependencies in this environment's site-packages."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=os.pathsep.join([str(site), sysconfig.get_paths()["purelib"]]), LANCE_LOG="error")
    return subprocess.run([sys.executable, "-S", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def test_wheel_holds_the_package_only_with_its_contracts_flows_and_deployments(installed: Path) -> None:
    top = {p.name for p in installed.iterdir() if not p.name.endswith(".dist-info") and p.name != "bin"}
    assert top == {"replaystore"}, "nothing installed under a generic top-level name"
    pkg = installed / "replaystore"
    assert sorted(p.stem for p in (pkg / "contracts").glob("*.json")) == KINDS
    assert (pkg / "deploy" / "prefect.yaml").read_text() == (ROOT / "deploy" / "prefect.yaml").read_text()
    assert sorted(p.name for p in (pkg / "flows").glob("*.py")) == sorted(p.name for p in (ROOT / "flows").glob("*.py"))
    source_packages = {p.parent.relative_to(ROOT).as_posix() for p in (ROOT / "replaystore").rglob("__init__.py")}
    assert source_packages <= {p.parent.relative_to(installed).as_posix() for p in pkg.rglob("__init__.py")}, "a subpackage is missing from pyproject's list"


def test_installed_wheel_inits_a_store_and_appends_to_every_kind(installed: Path, tmp_path: Path) -> None:
    init = run_installed(installed, tmp_path, "-m", "replaystore.cli", "--uri", "store", "--json", "init")
    assert init.returncode == 0, init.stderr
    appended = run_installed(installed, tmp_path, "-c", APPEND_EVERY_KIND)
    assert appended.returncode == 0, appended.stderr
    result = json.loads(appended.stdout)
    assert Path(result["file"]).is_relative_to(installed), "the wheel's copy ran, not the checkout"
    assert result["kinds"] == KINDS
    assert result["rows"] == {kind: 1 for kind in KINDS}


def test_installed_wheel_serves_and_imports_the_flows_and_no_module_named_flows(installed: Path, tmp_path: Path) -> None:
    help_ = run_installed(installed, tmp_path, "-m", "replaystore.cli", "serve", "--help")
    assert help_.returncode == 0 and "--prefect-file" in help_.stdout, help_.stderr
    imported = run_installed(installed, tmp_path, "-c", IMPORT_FLOWS)
    assert imported.returncode == 0, imported.stderr
    result = json.loads(imported.stdout)
    assert result["flows"] == ["distill", "index", "prune", "stream"]
    assert Path(result["prefect_file"]).is_relative_to(installed)
    assert result["generic"] is None, "import flows must fail where the wheel is installed"


def test_installed_wheel_carries_the_web_views_templates(installed: Path, tmp_path: Path) -> None:
    assert sorted(p.name for p in (installed / "replaystore" / "ui" / "templates").glob("*.html")) == sorted(
        p.name for p in (ROOT / "replaystore" / "ui" / "templates").glob("*.html")
    )
    code = (
        "import replaystore\nfrom starlette.testclient import TestClient\nfrom replaystore.ui import create_app\n"
        "store = replaystore.open('store'); store.create_table('priorities')\n"
        "page = TestClient(create_app(store)).get('/')\nprint(page.status_code, replaystore.__file__, 'priorities' in page.text)\n"
    )
    proc = run_installed(installed, tmp_path, "-c", code)
    assert proc.returncode == 0, proc.stderr
    status, module, listed = proc.stdout.split()
    assert status == "200" and listed == "True"
    assert module.startswith(str(installed)), "the installed wheel, not the checkout"
