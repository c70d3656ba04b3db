"""The pending stores' building blocks on their own: the Cython key index against a dict model, and a store's
lookups, chains and expiry."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from rootward.topology._index import KeyIndex
from rootward.topology.pairing import Pending, span_keys

U64 = np.uint64

ops = st.lists(
    st.one_of(
        st.tuples(st.just("insert"), st.lists(st.integers(0, 40), min_size=1, max_size=30)),
        st.tuples(st.just("remove"), st.lists(st.integers(0, 40), max_size=5)),
        st.tuples(st.just("floor"), st.integers(0, 20)),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(ops)
def test_the_key_index_answers_as_a_dict_with_a_moving_floor(operations: list[tuple[str, object]]) -> None:
    index, model, seq = KeyIndex(4), {}, 0
    for op, arg in operations:
        if op == "insert":
            keys = np.array(arg, U64)
            seqs = np.arange(seq, seq + len(keys), dtype=np.int64)
            expected = []
            for k, s in zip(arg, seqs.tolist(), strict=True):  # type: ignore[call-overload]
                old = model.get(k, -1)
                expected.append(old if old >= index.floor else -1)
                model[k] = s
            assert index.insert(keys, seqs).tolist() == expected
            seq += len(keys)
        elif op == "remove":
            index.remove(np.array(arg, U64))
            for k in arg:  # type: ignore[attr-defined]
                model.pop(k, None)
        else:
            index.floor = max(index.floor, seq - int(arg))  # type: ignore[call-overload]
        probe = np.arange(0, 41, dtype=U64)
        want = [model[k] if model.get(k, -1) >= index.floor else -1 for k in range(41)]
        assert index.lookup(probe).tolist() == want


def test_the_index_grows_and_stays_bounded_as_entries_expire() -> None:
    index = KeyIndex(16)
    rng = np.random.default_rng(1)
    for start in range(0, 200_000, 1000):
        index.insert(rng.integers(0, 2**63, 1000, dtype=np.int64).astype(U64), np.arange(start, start + 1000))
        index.floor = max(0, start - 5000)  # ~6,000 live at a time
    assert index.live() <= 6000
    assert index.size <= 32_768


def _store() -> Pending:
    return Pending({"svc": np.int32}, chained=True, capacity=4)


def _add(store: Pending, hi: list[int], ids: list[int], now: float) -> None:
    h, i = np.array(hi, U64), np.array(ids, U64)
    lo = np.zeros(len(hi), U64)
    store.append({"key": span_keys(h, lo, i), "hi": h, "lo": lo, "id": i, "svc": np.zeros(len(hi), np.int32)}, now)


def test_a_key_collision_never_pairs_two_different_spans() -> None:
    store = _store()
    hi, lo, sid = U64(7), U64(0), U64(12345)
    key = span_keys(np.array([hi]), np.array([lo]), np.array([sid]))[0]
    other_hi = U64(8)  # a different trace whose span id is chosen to give the same key
    other_id = key ^ (np.array([other_hi]) * U64(0x9E3779B97F4A7C15))[0]  # arrays wrap silently
    assert span_keys(np.array([other_hi]), np.array([lo]), np.array([other_id]))[0] == key
    _add(store, [7], [12345], 0.0)
    rows = store.lookup(np.array([key]), np.array([other_hi]), np.array([lo]), np.array([other_id]))
    assert rows.tolist() == [-1]
    rows = store.lookup(np.array([key]), np.array([hi]), np.array([lo]), np.array([sid]))
    assert rows.tolist() != [-1]


def test_take_follows_the_chain_of_one_key_and_expiry_drops_by_age() -> None:
    store = _store()
    _add(store, [1, 1, 2], [50, 50, 60], 0.0)  # two rows under one key, one under another
    _add(store, [1], [50], 1.0)
    hi, lo, ids = np.array([1], U64), np.zeros(1, U64), np.array([50], U64)
    position, rows = store.take(store.lookup(span_keys(hi, lo, ids), hi, lo, ids))
    assert position.tolist() == [0, 0, 0]
    assert len(set(rows.tolist())) == 3
    assert store.lookup(span_keys(hi, lo, ids), hi, lo, ids).tolist() == [-1]
    assert len(store.expire(0.5)) == 3  # the first batch
    assert len(store) == 1
