"""Optional TLS on both OTLP servers, with a test CA made by trustme; real SDK exporters as clients."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
import trustme
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from rootward.errors import StartupError
from rootward.receiver import Receiver
from rootward.telemetry import Telemetry
from rootward.testing import RecordingConsumer, local_receiver_config, running_receiver


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_receiver(ca: trustme.CA, tmp_path: Path) -> Iterator[tuple[Receiver, RecordingConsumer, Path]]:
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file, ca_file = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    cert.private_key_pem.write_to_path(str(key_file))
    cert_file.write_bytes(b"".join(pem.bytes() for pem in cert.cert_chain_pems))
    ca.cert_pem.write_to_path(str(ca_file))
    with running_receiver(**{"tls.cert_file": str(cert_file), "tls.key_file": str(key_file)}) as (server, consumer):
        yield server, consumer, ca_file


def test_sdk_exporters_deliver_spans_over_tls_on_both_transports(
    tls_receiver: tuple[Receiver, RecordingConsumer, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # requests lets these variables override the exporter's certificate_file (session.verify).
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    server, consumer, ca_file = tls_receiver
    creds = grpc.ssl_channel_credentials(root_certificates=ca_file.read_bytes())
    exporters = [
        GrpcSpanExporter(endpoint=f"localhost:{server.grpc.port}", credentials=creds),
        HttpSpanExporter(endpoint=f"https://localhost:{server.http.port}/v1/traces", certificate_file=str(ca_file)),
    ]
    for exporter in exporters:
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        with provider.get_tracer("t").start_as_current_span("secure"):
            pass
        provider.shutdown()
    assert consumer.wait_for("traces", 2) == 2


def test_plain_http_to_a_tls_port_does_not_get_through(
    tls_receiver: tuple[Receiver, RecordingConsumer, Path],
) -> None:
    server, consumer, _ = tls_receiver
    with pytest.raises(httpx.HTTPError):
        httpx.post(f"http://127.0.0.1:{server.http.port}/v1/traces", content=b"", timeout=5)
    assert consumer.count("traces") == 0


def test_unreadable_tls_files_fail_start_with_a_clear_error(tmp_path: Path) -> None:
    cfg = local_receiver_config(**{"tls.cert_file": str(tmp_path / "no.pem"), "tls.key_file": str(tmp_path / "no.key")})
    receiver = Receiver(cfg, RecordingConsumer(), Telemetry())
    with pytest.raises(StartupError, match="OTLP/gRPC cannot listen"):
        receiver.start()
    receiver.shutdown()
