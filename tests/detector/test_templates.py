"""Log templates with drain3: a new error template after warm-up and a surge of a known one are anomalies on the
service, named by template id (the text stays in the process), with a trace exemplar."""

from __future__ import annotations

from rootward.clock import ManualClock
from rootward.detector.detector import Anomaly
from rootward.detector.templates import LogTemplates

from log_records import lines


def test_new_and_surging_error_templates_are_anomalies() -> None:
    clock = ManualClock(1000.0)
    found: list[Anomaly] = []
    miner = LogTemplates(lambda _, a: found.extend(a), clock, window_s=10, warmup_windows=3)
    for w in range(8):  # a steady trickle of one warning, and info lines that are not mined
        miner.consume_logs(lines("cart", f"redis slow: {w} ms", f"retrying key {w}", severity=13))
        miner.consume_logs(lines("cart", f"served {w}", severity=9))
        clock.advance(10)
    miner.tick()
    assert found == []
    miner.consume_logs(lines("payment", *[f"charge failed: card {n} declined" for n in range(3)]))  # new
    miner.consume_logs(lines("cart", *[f"redis slow: {n} ms" for n in range(30)], severity=13))  # surge
    clock.advance(10)
    miner.tick()
    got = {(a.entity, a.value) for a in found}
    assert got == {("service:/payment", 3.0), ("service:/cart", 30.0)}
    new = next(a for a in found if a.entity == "service:/payment")
    template = int(new.signal.removeprefix("log_template:"))
    assert miner.templates[template] == "charge failed: card <NUM> declined"  # numbers masked
    assert miner.exemplars[("service:/payment", template)] == "01" * 16


def test_mining_is_bounded_per_window() -> None:
    clock = ManualClock(0.0)
    miner = LogTemplates(lambda _, a: None, clock, max_lines_per_window=10)
    miner.consume_logs(lines("x", *[f"error {n}" for n in range(25)]))
    assert miner.skipped == 15
