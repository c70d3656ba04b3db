"""One detection window of the synthetic shop's traffic: sent through the OTel SDK, taken in by a running App on a
manual clock, and the window closed (what the detection, acting, web and warm-start tests build their faults from)."""

from __future__ import annotations

from rootward.app import App
from rootward.clock import ManualClock
from rootward.synthetic import Shop


def shop_window(app: App, shop: Shop, clock: ManualClock, failing: bool = False, requests: int = 12) -> None:
    for _ in range(requests):
        shop.request(payment_failing=failing)
    shop.flush()
    app.receiver.queue.wait_idle()
    clock.advance(10)
    app.tick()
