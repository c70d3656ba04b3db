"""Scoring arithmetic on a tiny hand-made day whose answers are worked out by hand."""

from __future__ import annotations

import pytest

from rootward.scoring import (
    Fault,
    Opened,
    by_type,
    false_incidents,
    fault_free_seconds,
    outcomes,
    published,
    reliability,
    summary,
    table,
)

from shared_data import SHARED_DATA

FAULTS = [
    Fault("ob", "2022-08-22", 1000.0, "cart", "cpu_contention"),  # found first
    Fault("ob", "2022-08-22", 2000.0, "payment", "exception"),  # found third
    Fault("ob", "2022-08-22", 3000.0, "email", "exception"),  # detected, not named
    Fault("ob", "2022-08-22", 4000.0, "frontend", "network_delay"),  # the incident came too late: a miss
]
INCIDENTS = [
    Opened(1030.0, ("cart", "frontend")),
    Opened(1100.0, ("frontend",)),  # a second incident in the same window: only the first counts
    Opened(2060.0, ("checkout", "frontend", "payment")),
    Opened(3010.0, ("cart",)),
    Opened(4200.0, ("frontend",)),  # 200 s after: outside the 180 s window, so false
    Opened(500.0, ("cart",)),  # before any fault: false
]


def test_each_fault_is_scored_by_the_first_incident_in_its_window() -> None:
    results = outcomes(FAULTS, INCIDENTS)
    assert [(r.detected, r.rank, r.delay_s) for r in results] == [
        (True, 1, 30.0),
        (True, 3, 60.0),
        (True, None, 10.0),
        (False, None, None),
    ]


def test_the_summary_is_the_hand_worked_arithmetic() -> None:
    results = outcomes(FAULTS, INCIDENTS)
    false = false_incidents(FAULTS, INCIDENTS)
    assert false == 2
    # observed 0..5000 s; the windows cover 4 x 180 s of it
    free = fault_free_seconds([(0.0, 2500.0), (2400.0, 5000.0)], FAULTS)
    assert free == pytest.approx(5000 - 4 * 180)
    s = summary(results, false, free)
    assert s["faults"] == 4
    assert s["detected"] == 3
    assert s["recall"] == pytest.approx(0.75)
    assert (s["ac1"], s["ac3"], s["ac5"]) == (0.25, 0.5, 0.5)
    assert s["avg5"] == pytest.approx((0.25 + 0.25 + 0.5 + 0.5 + 0.5) / 5)
    assert s["mean_delay_s"] == pytest.approx(100 / 3)
    assert s["false_per_hour"] == pytest.approx(2 / ((5000 - 720) / 3600))


def test_scores_split_by_fault_type() -> None:
    types = by_type(outcomes(FAULTS, INCIDENTS))
    assert set(types) == {"cpu_contention", "exception", "network_delay"}
    assert types["exception"]["ac3"] == 0.5
    assert types["network_delay"]["detected"] == 0


def test_nothing_detected_and_no_faults_are_zeros_not_errors() -> None:
    assert summary([])["ac1"] == 0.0
    s = summary(outcomes(FAULTS, []))
    assert (s["ac1"], s["recall"], s["mean_delay_s"], s["false_per_hour"]) == (0.0, 0.0, None, None)


def test_the_table_puts_rootward_beside_the_published_rows() -> None:
    rows = published(SHARED_DATA / "published-results" / "nezha_fse23_table3_service_level.csv")
    nezha = next(p for p in rows if p.method == "Nezha")
    assert nezha.scores["ob"] == pytest.approx((0.9286, 0.9643, 0.9643))
    text = table({"ob": summary(outcomes(FAULTS, INCIDENTS))}, rows)
    lines = text.splitlines()
    assert lines[0].split() == ["method", "OB", "AC@1", "OB", "AC@3", "OB", "AC@5"]
    assert lines[2].split() == ["Rootward", "25.00%", "50.00%", "50.00%"]
    assert lines[3].split()[0] == "Nezha"  # best first
    assert len(lines) == 3 + len(rows)


def test_reliability_bins_the_top_confidence_against_being_right() -> None:
    faults = FAULTS[:3]
    incidents = [
        Opened(1030.0, ("cart",), 0.9),  # right, confident
        Opened(2060.0, ("checkout", "payment"), 0.85),  # wrong at 1, confident
        Opened(3010.0, ("email",), 0.3),  # right, unsure
    ]
    r = reliability(outcomes(faults, incidents))
    assert r["scored"] == 3
    assert r["bins"] == [
        {"from": 0.2, "to": 0.4, "count": 1, "confidence": 0.3, "accuracy": 1.0},
        {"from": 0.8, "to": 1.0, "count": 2, "confidence": pytest.approx(0.875), "accuracy": 0.5},
    ]
    assert r["ece"] == pytest.approx((1 * 0.7 + 2 * 0.375) / 3)
    assert reliability([])["ece"] is None


def test_an_incident_in_the_lead_before_the_label_detects_the_fault_and_is_not_false() -> None:
    faults = [Fault("tt", "2023-01-29", 1000.0, "basic", "return")]
    early = [Opened(950.0, ("basic",))]  # 50 s before the label: the fault's own errors came first
    found = outcomes(faults, early, lead_s=60)
    assert [(r.detected, r.rank, r.delay_s) for r in found] == [(True, 1, -50.0)]
    assert summary(found)["mean_delay_s"] == 0.0  # early is not faster than at once
    assert false_incidents(faults, early, lead_s=60) == 0
    assert fault_free_seconds([(0.0, 2000.0)], faults, lead_s=60) == pytest.approx(2000 - 240)
    # scored against the labels as they are (the functions' default), it is a miss and a false incident
    assert [r.detected for r in outcomes(faults, early)] == [False]
    assert false_incidents(faults, early) == 1


def test_an_incident_detects_one_fault_at_most() -> None:
    """Two labels 200 s apart: the incident at 1170 s is in both windows (with the lead) and detects the first."""
    faults = [Fault("tt", "d", 1200.0, "b", "exception"), Fault("tt", "d", 1000.0, "b", "return")]
    found = outcomes(faults, [Opened(1170.0, ("b",))], lead_s=60)
    assert [(r.fault.kind, r.detected) for r in found] == [("exception", False), ("return", True)]
