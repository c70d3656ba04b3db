"""``rootward eval nezha`` end to end: the JSON document's shape on tiny hand-made days, and the scores on the
shared OnlineBoutique and TrainTicket days (the floors rise as detection and diagnosis improve)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from rootward.cli import main

from nezha_days import ob_day, tt_day
from shared_data import SHARED_DATA

DAY_KEYS = {
    "system", "day", "faults", "detected", "ac1", "ac3", "ac5", "avg5", "recall", "false_incidents",
    "false_per_hour", "fault_free_hours", "mean_delay_s", "incidents", "by_type", "skipped", "replay_seconds",
    "window_s", "outcomes",
}  # fmt: skip
OUTCOME_KEYS = {"service", "kind", "inject", "detected", "rank", "delay_s", "confidence"}
SCORE_KEYS = {"faults", "detected", "ac1", "ac3", "ac5", "avg5", "recall", "mean_delay_s", "false_incidents"}


def run_eval(out: Path, *args: str) -> tuple[str, dict[str, object]]:
    scores = out / "scores.json"
    result = CliRunner().invoke(main, ["eval", "nezha", *args, "--json", str(scores)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output, json.loads(scores.read_text())


def test_the_json_document_has_the_stable_shape(tmp_path: Path) -> None:
    ob_day(tmp_path)
    tt_day(tmp_path)
    output, doc = run_eval(tmp_path, str(tmp_path))
    days = doc["days"]
    assert isinstance(days, list)
    assert [(d["system"], d["day"]) for d in days] == [("ob", "2022-08-22"), ("tt", "2023-01-29")]
    for day in days:
        assert set(day) == DAY_KEYS
        assert all(0.0 <= day[k] <= 1.0 for k in ("ac1", "ac3", "ac5", "avg5", "recall"))
        assert day["window_s"] == [-60.0, 180.0]
        assert len(day["outcomes"]) == day["faults"]
        assert all(set(o) == OUTCOME_KEYS for o in day["outcomes"])
    assert days[0]["faults"] == 2  # the hand-made fault list
    overall = doc["overall"]
    assert isinstance(overall, dict)
    assert set(overall) == {"ob", "tt"}
    assert set(overall["ob"]) >= SCORE_KEYS | {"calibration"}
    assert "Rootward" in output
    assert "ob 2022-08-22 04:10:00 return on frontend: missed" in output  # each fault not ranked first, a line


def test_no_nezha_data_is_a_clear_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["eval", "nezha", str(tmp_path)])
    assert result.exit_code == 1
    assert "no rca_data/<YYYY-MM-DD>" in result.output


def shared_day(out: Path, archive: str, faults: int) -> dict[str, Any]:
    """One shared Nezha day through ``rootward eval``: its scores (the output is printed for the test log)."""
    output, doc = run_eval(out, str(SHARED_DATA / "nezha" / archive))
    (day,) = doc["days"]  # type: ignore[misc]
    print(output)
    assert day["faults"] == faults
    assert set(day) == DAY_KEYS
    return day  # type: ignore[no-any-return]


@pytest.mark.slow
def test_the_shared_onlineboutique_day_end_to_end(tmp_path: Path) -> None:
    day = shared_day(tmp_path, "ob-2022-08-22.tar.gz", 24)
    # The floor of what detection and the graph reasoner achieve today (21/24 detected, AC@1 0.83, 3 false incidents,
    # bench/README.md); raise it as they improve (issues 6 and 7: recall >= 0.95, AC@1 >= 0.90, <= 1 false an hour).
    assert day["detected"] >= 21
    assert day["ac1"] >= 0.83  # above MicroRank's published OB AS@1 (41.07 %) and Nezha without logs (64.28 %)
    assert day["by_type"]["return"]["detected"] >= 3  # missing spans: the day has no logs at its code faults
    assert day["false_per_hour"] <= 0.5
    assert day["by_type"]["cpu_contention"]["ac1"] >= 0.875  # a starved caller named, not the callees it slows


@pytest.mark.slow
def test_the_shared_trainticket_day_end_to_end(tmp_path: Path) -> None:
    day = shared_day(tmp_path, "tt-2023-01-29.tar.gz", 28)
    # The floor today (26/28 detected, AC@1 0.68, AC@3 0.71, 0.60 false incidents an hour, bench/README.md): most of
    # it is the log flow's missing lines; before it 3/28 and AC@1 0.11. Raise it as detection improves. Scored with
    # the 60 s lead before each label (JVM-agent faults show before their labels).
    assert day["detected"] >= 26
    assert day["ac1"] >= 0.67  # above MicroRank (15.56 %) and Nezha without logs (42.22 %), published TT AS@1
    assert day["ac3"] >= 0.71
    assert day["false_per_hour"] <= 0.6
    code = day["by_type"]
    assert code["exception"]["detected"] + code["return"]["detected"] >= 22


def test_a_negative_lead_is_a_clear_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["eval", "nezha", str(tmp_path), "--lead", "-1"])
    assert result.exit_code == 2
    assert "--lead" in result.output
    assert "-1" in result.output
