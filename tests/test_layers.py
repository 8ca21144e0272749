"""The package's layering (DESIGN.md, "Layout"): stages never import the apps layer, the HAL never
imports training, and cli.py holds no pipeline logic."""

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "robolearn"
STAGES = ["data", "policies", "train", "envs", "eval", "robots", "teleop", "rl", "utils"]


def _imports(path: Path) -> set[str]:
    """Every module a file imports (top level or inside functions)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


@pytest.mark.parametrize("stage", STAGES)
def test_no_stage_imports_the_apps_layer_or_the_cli(stage):
    files = sorted((PKG / stage).rglob("*.py"))
    assert files, stage
    bad = {str(f.relative_to(PKG)): sorted(m for m in _imports(f) if m.startswith(("robolearn.apps", "robolearn.cli")))
           for f in files}
    assert {f: m for f, m in bad.items() if m} == {}


def test_the_hal_imports_no_training_and_data_no_policy():
    for stage, banned in (("robots", ("robolearn.train", "robolearn.policies")), ("data", ("robolearn.policies", "robolearn.train"))):
        for f in (PKG / stage).rglob("*.py"):
            assert not [m for m in _imports(f) if m.startswith(banned)], f


def test_only_the_apps_layer_imports_rl():
    """Residual RL is a stage on top: of the other stages, only eval's rollout reaches it, through the
    policy registry (a string, not an import)."""
    for stage in STAGES:
        if stage == "rl":
            continue
        for f in (PKG / stage).rglob("*.py"):
            assert not [m for m in _imports(f) if m.startswith("robolearn.rl")], f


def test_cli_only_calls_the_apps_layer():
    """cli.py imports nothing of the stages except the store summary (inspect) and the error types."""
    allowed = {"robolearn.data.store", "robolearn.utils.errors"}
    used = {m for m in _imports(PKG / "cli.py") if m.startswith("robolearn.")}
    assert used - allowed <= {m for m in used if m.startswith("robolearn.apps.")}
    assert any(m.startswith("robolearn.apps.") for m in used)
