"""Writes one CRM-shaped OTLP trace export request (500 spans of crm-conductor, 10 attributes and 1-3 events
each, as bench/ingest builds them) as protobuf to the file named by the first argument."""
import random
import sys
import time

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status


def kv(key, value):
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


rng = random.Random(42)
now = time.time_ns()
spans = []
for _ in range(500):
    start = now - rng.randrange(60_000_000_000)
    duration = rng.randrange(1_000_000, 300_000_000)
    attributes = [
        kv("customer.tier", rng.choice(["gold", "silver", "bronze"])),
        kv("customer.id", f"acc-{rng.randrange(1, 200_000)}"),
        kv("crm.tenant", f"tenant-{rng.randrange(1, 40)}"),
        kv("http.request.method", "GET"),
        kv("http.route", rng.choice(["/accounts/{id}", "/contacts", "/opportunities/{id}"])),
        kv("http.response.status_code", rng.choice([200, 200, 200, 404, 500])),
        kv("url.path", f"/accounts/{rng.randrange(1, 99_999)}"),
        kv("server.address", "api.crm.example.com"),
        kv("user_agent.original", "CRM-Mobile/5.2.1 (iOS 18.1)"),
        kv("network.protocol.version", "2"),
    ]
    events = [
        Span.Event(
            time_unix_nano=start + rng.randrange(duration),
            name="cache.lookup",
            attributes=[kv("cache.hit", rng.choice(["true", "false"]))],
        )
        for _ in range(rng.randrange(1, 4))
    ]
    spans.append(
        Span(
            trace_id=rng.randbytes(16),
            span_id=rng.randbytes(8),
            parent_span_id=rng.randbytes(8),
            name="GET /accounts/{id}",
            kind=Span.SPAN_KIND_SERVER,
            start_time_unix_nano=start,
            end_time_unix_nano=start + duration,
            attributes=attributes,
            events=events,
            status=Status(code=Status.STATUS_CODE_UNSET),
        )
    )
resource = Resource(
    attributes=[
        kv("service.name", "crm-conductor"),
        kv("service.version", "2.4.1"),
        kv("deployment.environment.name", "production"),
        kv("host.name", "crm-conductor-7d9f8c6b5-x2x4q"),
        kv("telemetry.sdk.language", "rust"),
    ]
)
scope = InstrumentationScope(name="crm-conductor.instrumentation", version="1.0.0")
request = ExportTraceServiceRequest(
    resource_spans=[ResourceSpans(resource=resource, scope_spans=[ScopeSpans(scope=scope, spans=spans)])]
)
with open(sys.argv[1], "wb") as out:
    out.write(request.SerializeToString())
