"""The README's results tables are what benchmarks/readme_tables.py writes from benchmarks/results/*.json,
every results entry is shown in some row, and --check catches a table edited by hand."""

import copy
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tables():
    spec = importlib.util.spec_from_file_location("readme_tables", ROOT / "benchmarks" / "readme_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_results_tables_match_the_benchmark_json(tables):
    text = (ROOT / "README.md").read_text()
    assert tables.render_readme(text, tables.load_results()) == text, (
        "README.md's results tables differ from benchmarks/results/*.json: run python benchmarks/readme_tables.py")


def test_every_results_entry_has_a_readme_row(tables):
    assert tables.unshown_entries(tables.load_results()) == []


def test_tables_follow_the_json(tables):
    data = tables.load_results()
    changed = copy.deepcopy(data)
    changed["core"]["training"]["train_samples_per_s"] = 1234.5
    changed["policies"]["entries"]["can_act"]["success_ci95"] = [0.111, 0.999]
    main = tables.render_blocks(changed)["main"]
    learning = tables.render_blocks(changed)["learning"]
    assert "1,234 samples/s" in main and "1,234" not in tables.render_blocks(data)["main"]
    assert "0.78 [0.11, 1.00]" in learning


def test_rows_name_their_machine_and_mark_readme_only_figures(tables):
    blocks = tables.render_blocks(tables.load_results())
    throughput = next(line for line in blocks["main"].splitlines() if line.startswith("| Training throughput"))
    assert throughput.endswith("| M1 · core.json; earlier: core.json at e4a82fb, 33b63f0, 3dbcb5f |")
    quickstart = next(line for line in blocks["main"].splitlines() if line.startswith("| `make quickstart`"))
    assert quickstart.endswith("| — · README at fe7c0d3 † |")  # no machine recorded, no output kept
    assert "- **M1**: 2 CPU cores" in blocks["machines"]


def test_check_exits_nonzero_on_drift_and_write_repairs_it(tables, tmp_path, capsys):
    readme = tmp_path / "README.md"
    good = (ROOT / "README.md").read_text()
    readme.write_text(good.replace("| M1 · hal.json |", "| M1 · hal.json (edited) |", 1))
    assert tables.main(["--check", "--readme", str(readme)]) == 1
    assert "(edited)" in readme.read_text()  # --check writes nothing
    assert "+| 60 s, SCHED_FIFO" in capsys.readouterr().out  # the diff names the row
    assert tables.main(["--readme", str(readme)]) == 0
    assert readme.read_text() == good
    assert tables.main(["--check", "--readme", str(readme)]) == 0


def test_missing_markers_are_an_error(tables):
    with pytest.raises(ValueError, match=r"results:main:begin .* found 0"):
        tables.render_readme("# no results here\n", tables.load_results())
