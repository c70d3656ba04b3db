"""Warm start (detector/warm.py): a restarted Rootward judges its series against the history it saved, so a fault
right after a restart is found; a cold one is still warming up. Files it cannot trust are not used."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from rootward.app import App
from rootward.clock import ManualClock
from rootward.config import LOCAL_PORTS, load_config
from rootward.detector.baseline import Rule
from rootward.detector.detector import Detector, DetectorSettings
from rootward.detector.warm import load, save, snapshot
from rootward.synthetic import Shop

from shop_windows import shop_window


@contextmanager
def running(data: Path, clock: ManualClock, *settings: str) -> Iterator[tuple[App, Shop]]:
    overrides = [
        *LOCAL_PORTS, f"storage.data_dir={data}", "topology.history.enabled=false", "detection.window_s=10",
        "detection.warmup=5", *settings,
    ]  # fmt: skip
    app = App(load_config(environ={}, overrides=overrides), clock=clock)
    app.start(timers=False)
    shop = Shop(f"127.0.0.1:{app.receiver.grpc.port}")
    try:
        yield app, shop
    finally:
        shop.close()
        app.shutdown()


def windows(app: App, shop: Shop, clock: ManualClock, n: int, failing: bool = False) -> None:
    for _ in range(n):
        shop_window(app, shop, clock, failing)


@pytest.mark.parametrize("warm", [True, False])
def test_a_fault_right_after_a_restart_is_found_with_the_saved_baselines(tmp_path: Path, warm: bool) -> None:
    clock = ManualClock(1_000.0)
    setting = f"detection.warm_start={'true' if warm else 'false'}"
    with running(tmp_path, clock, setting) as (app, shop):
        windows(app, shop, clock, 10)  # healthy: the baselines learn
        assert not app.incidents.listed()
    assert (tmp_path / "detector.npz").exists() is warm
    clock.advance(30)  # a rollout of Rootward
    with running(tmp_path, clock, setting) as (app, shop):
        restored = app.detector.warm.copy()
        windows(app, shop, clock, 3, failing=True)  # payment fails from the first window after the restart
        opened = app.incidents.listed()
    if warm:
        assert ("service:shop/payment", "error_ratio") in restored
        assert opened, "the saved baselines judged the fault at once"
        assert "service:shop/payment" in opened[0].first_seen
    else:
        assert not opened  # still warming up: 5 windows without a judgement


def _detector(history: int = 8) -> Detector:
    return Detector(lambda t, a: None, DetectorSettings(history=history, warmup=2), ManualClock(0.0))


def test_a_ring_comes_back_oldest_first_even_when_it_wrapped(tmp_path: Path) -> None:
    source = _detector()
    i = source.table.get("service:shop/cart", "rate")
    source.baselines.add_series([Rule()])
    for value in range(1, 12):  # 11 values in a ring of 8: wrapped
        source.baselines.learn(np.array([i]), np.array([float(value)]), np.array([value != 9]))
    assert source.baselines.recent(i, 8) == tuple(float(v) for v in range(4, 12))
    save(source, tmp_path / "detector.npz", now=100.0)
    keys, values, kept, count = snapshot(source)
    assert keys == [("service:shop/cart", "rate")]
    assert count.tolist() == [8]
    assert values[0].tolist() == [float(v) for v in range(4, 12)]  # oldest first, the wrap undone
    assert kept[0].tolist() == [v != 9 for v in range(4, 12)]
    rings = load(tmp_path / "detector.npz", source.settings.window_s, now=200.0, max_age_s=3600)
    target = _detector()
    target.warm = rings
    j = target.table.get("service:shop/cart", "rate")
    target.baselines.add_series([Rule()])
    target.streak = np.zeros(1, np.int64)
    target.onset, target.valued = np.zeros(1, np.int64), np.zeros(1, np.int64)
    target.is_log, target.trail = np.zeros(1, bool), np.zeros((1, target.trail_n))
    target._fresh(np.array([j]), 0)
    assert target.baselines.recent(j, 8) == tuple(float(v) for v in range(4, 12))
    assert int(target.baselines.left_out[j]) == 1  # the value left out (9) stays out
    assert target.warm == {}


@pytest.mark.parametrize("problem", ["another-window", "stale", "corrupt", "missing"])
def test_a_file_it_cannot_trust_gives_a_cold_start(tmp_path: Path, problem: str) -> None:
    source = _detector()
    i = source.table.get("service:shop/cart", "rate")
    source.baselines.add_series([Rule()])
    source.baselines.learn(np.array([i]), np.array([1.0]))
    path = tmp_path / "detector.npz"
    save(source, path, now=100.0)
    window, now = source.settings.window_s, 200.0
    if problem == "another-window":
        window = 30.0
    elif problem == "stale":
        now = 100.0 + 2 * 86400
    elif problem == "corrupt":
        path.write_bytes(path.read_bytes()[:100])
    else:
        path.unlink()
    assert load(path, window, now, max_age_s=86400) == {}


def test_a_restart_soon_after_a_restart_keeps_the_saved_rings(tmp_path: Path) -> None:
    clock = ManualClock(1_000.0)
    with running(tmp_path, clock) as (app, shop):
        windows(app, shop, clock, 6)
    first = load(tmp_path / "detector.npz", 10.0, clock.now(), 86400)
    assert ("service:shop/payment", "error_ratio") in first
    with running(tmp_path, clock):
        pass  # stopped before any series came back (a crash loop, an aborted rollout)
    again = load(tmp_path / "detector.npz", 10.0, clock.now(), 86400)
    assert again.keys() == first.keys()
    ring, _ = again[("service:shop/payment", "error_ratio")]
    assert len(ring) == 6


def test_a_slot_given_to_a_new_series_is_not_saved_under_the_new_key(tmp_path: Path) -> None:
    detector = _detector()
    a = detector.table.get("pod:shop/a", "rate")
    detector.baselines.add_series([Rule()])
    detector.baselines.learn(np.array([a]), np.array([111.0]))
    detector.table.release([a])
    b = detector.table.get("pod:shop/b", "rate")  # the same slot, not started over until the next window closes
    assert b == a
    keys, _, _, _ = snapshot(detector)
    assert keys == []


@pytest.mark.parametrize(
    "arrays",
    [
        {"values": np.zeros(3, np.float32), "kept": np.ones(3, bool), "count": np.ones(1, np.int64)},
        {"values": np.zeros((1, 2, 3), np.float32), "kept": np.ones((1, 2, 3), bool), "count": np.ones(1, np.int64)},
        {"values": np.array([["x"]]), "kept": np.ones((1, 1), bool), "count": np.ones(1, np.int64)},
    ],
    ids=["flat", "three-dimensional", "text"],
)
def test_a_file_of_other_shapes_is_a_cold_start_and_the_app_starts(tmp_path: Path, arrays: dict[str, object]) -> None:
    path = tmp_path / "detector.npz"
    keys = np.array(json.dumps([["service:shop/cart", "rate"]]))
    np.savez(path, version=np.array(1), saved_at=np.array(990.0), window_s=np.array(10.0), keys=keys, **arrays)
    assert load(path, 10.0, 1_000.0, 86400) == {}
    clock = ManualClock(1_000.0)
    with running(tmp_path, clock) as (app, shop):
        windows(app, shop, clock, 1)
        assert app.detector.warm == {}


def test_an_app_shut_down_before_it_started_leaves_the_saved_file_alone(tmp_path: Path) -> None:
    clock = ManualClock(1_000.0)
    with running(tmp_path, clock) as (app, shop):
        windows(app, shop, clock, 6)
    saved = (tmp_path / "detector.npz").read_bytes()
    overrides = [*LOCAL_PORTS, f"storage.data_dir={tmp_path}", "topology.history.enabled=false"]
    App(load_config(environ={}, overrides=overrides), clock=clock).shutdown()  # never started: nothing was read
    assert (tmp_path / "detector.npz").read_bytes() == saved
