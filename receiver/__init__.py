"""Stage 1, the receiver: OTLP/gRPC (4317) and OTLP/HTTP (4318) servers that decode requests into columnar
batches, with auth, limits and backpressure, and hand them to a :class:`rootward.model.Consumer`.

Public names: :class:`Receiver` (the component), :class:`BatchQueue`, and the decoders for use on their own
(replay, benchmarks): :class:`TraceDecoder`, :class:`MetricDecoder`, :class:`LogDecoder`.
"""

from rootward.receiver.logs import LogDecoder
from rootward.receiver.metrics import MetricDecoder
from rootward.receiver.queue import BatchQueue
from rootward.receiver.server import Receiver
from rootward.receiver.traces import TraceDecoder

__all__ = ["BatchQueue", "LogDecoder", "MetricDecoder", "Receiver", "TraceDecoder"]
