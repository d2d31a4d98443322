"""The measured figures the pages quote agree with the files the scripts write
(``docs/figures``), and the checker catches a figure that does not."""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))

import figures  # noqa: E402
import loadkit  # noqa: E402

SERVER_RUN = "bench_server/fp32-bf16_batching-on"


def test_every_page_table_figure_and_chart_agrees_with_the_figures_files() -> None:
    assert figures.check() == []


@pytest.fixture
def figures_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The figures files copied to a temporary folder the checker reads instead."""
    copy = tmp_path / "figures"
    shutil.copytree(figures.FIGURES_DIR, copy)
    monkeypatch.setattr(figures, "FIGURES_DIR", copy)
    return copy


def test_a_figure_measured_again_cannot_stay_old_on_the_page(figures_copy: Path) -> None:
    path = figures_copy / "bench_server.json"
    document = json.loads(path.read_text())
    row = document["runs"]["fp32-bf16_batching-on"]["figures"]["servers"]["fp32"]["on"]["8"]
    row["throughput_rps"] = 30.01
    path.write_text(json.dumps(document))

    problems = figures.page_problems("performance", (REPO / "docs/performance.md").read_text())

    assert any("generated block is out of date" in line for line in problems)
    assert any(line.startswith("performance: 24.39 should be 30.01") for line in problems)


def test_a_quoted_figure_that_is_not_its_value_is_caught() -> None:
    page = f"It served 24.40<!--fig {SERVER_RUN} {{servers.fp32.on.8.throughput_rps}}--> req/s."
    assert figures.page_problems("page", page) == [
        f"page: 24.40 should be 24.39 ({SERVER_RUN} {{servers.fp32.on.8.throughput_rps}})"
    ]
    rounded = page.replace("24.40", "24.4")
    assert figures.page_problems("page", rounded) == []


def test_a_quoted_figure_citing_a_missing_key_is_caught() -> None:
    page = f"It took 12<!--fig {SERVER_RUN} {{servers.fp64.on.8.p50_ms}}--> ms."
    (problem,) = figures.page_problems("page", page)
    assert "cites what is not there" in problem


def test_a_measurement_without_a_source_is_caught_and_fixed_quantities_pass() -> None:
    assert figures.page_problems("page", "A batch of 8 took 275 ms.") == [
        "page: '275 ms' has no source (<!--fig ...--> or FIXED)"
    ]
    assert figures.page_problems("page", "Run `sleep 275 ms` and the 8 x 200 answers.") == []


def test_expressions_compute_the_figures_the_prose_derives() -> None:
    run = figures.load_run(SERVER_RUN)["figures"]
    gain = figures.evaluate(
        run,
        "100 * ({servers.bf16.on.8.throughput_rps} / {servers.fp32.on.8.throughput_rps} - 1)",
    )
    assert figures.shown_as(gain, "8")
    assert not figures.shown_as(gain, "7.6")
    with pytest.raises(ValueError, match="not a figure expression"):
        figures.evaluate(run, "__import__('os')")


def test_write_figures_records_a_run_with_its_provenance_beside_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loadkit, "FIGURES_DIR", tmp_path)
    monkeypatch.setattr(sys, "argv", ["scripts/burst.py", "--image", "flat"])
    loadkit.write_figures("flat", {"peak_mib": 1008})
    monkeypatch.setattr(sys, "argv", ["scripts/burst.py"])
    loadkit.write_figures("photo", {"peak_mib": 994})
    loadkit.write_figures("photo", {"peak_mib": 990})

    document = json.loads((tmp_path / "burst.json").read_text())
    assert document["script"] == "scripts/burst.py"
    assert list(document["runs"]) == ["flat", "photo"]
    flat, photo = document["runs"]["flat"], document["runs"]["photo"]
    assert flat["command"] == "python scripts/burst.py --image flat"
    assert flat["figures"] == {"peak_mib": 1008}
    assert photo["figures"] == {"peak_mib": 990}
    machine = photo["machine"]
    assert machine["cpus"] >= 1 and machine["cpu"] == loadkit.cpu_name()
    assert machine["tensorflow"][0].isdigit()
    assert len(machine["load_average"]) == 2
    assert len(photo["date"]) == 10


def test_one_percentile_definition() -> None:
    values = [5.0, 1.0, 4.0, 2.0, 3.0]
    assert loadkit.percentile(values, 0.5) == 3.0
    assert loadkit.percentile(values, 0.0) == 1.0
    assert loadkit.percentile(values, 1.0) == 5.0
    assert loadkit.percentile(values, 0.95) == 5.0
    assert loadkit.percentile(values, 0.74) == 4.0
    assert math.isnan(loadkit.percentile([], 0.5))
