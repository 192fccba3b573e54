"""Agent log lines, traces, metrics and session reports, uploaded the way livekit-agents does it.

An unmodified livekit-agents worker whose `LIVEKIT_OBSERVABILITY_URL` points at callboard, running a
job with `enable_recording` set (callboard sets it, `Settings.enable_recording`), sends OTLP/HTTP
(protobuf, usually gzip) to `/observability/{logs,traces,metrics}/otlp/v0` and, at session end, a
multipart session report to `/observability/recordings/v0` (livekit-wire §11). Each request carries
`Authorization: Bearer <jwt>` minted from the worker's own key with the `observability.write` grant.

- Who: the project and developer come from the key that signed the token, never from the payload.
  A token without `observability.write` gets permission_denied.
- Logs: each record becomes an event-log line of kind `agent.log`, in the key's project, with the
  job id livekit-agents stamps on every record (`job_id` attribute). The job is looked up in that
  project only, which adds its room, dispatch, worker and agent name; a job id of another project
  finds nothing there, so its lines stay bare lines of the uploader's own project.
- Traces and metrics: parsed and counted per project (`callboard_otlp_*_total` in `/metrics`);
  not stored.
- Session reports: the protobuf header is read (job, duration) and logged as `agent.session_report`;
  the chat history and audio parts are read and dropped.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import logging
import zlib
from collections import Counter
from collections.abc import Iterator
from typing import Any

import jwt
from aiohttp import BodyPartReader, web
from google.protobuf.message import DecodeError
from livekit.protocol import metrics as lk_metrics
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from callboard.dispatch.model import RecordEvent
from callboard.protocol.errors import InvalidArgument, PermissionDenied
from callboard.server.auth import Caller, authenticate, request_token
from callboard.server.hub import Hub

log = logging.getLogger("callboard.otlp")

MAX_UPLOAD_BYTES = 16 * 1024 * 1024  # after decompression; an agent's batch is far smaller
MAX_MESSAGE_CHARS = 8192
PROTOBUF = "application/x-protobuf"


def caller_for_upload(hub: Hub, request: web.Request) -> Caller:
    """The uploader's key, provided its token holds `observability.write`."""
    token = request_token(request)
    caller = authenticate(hub.store, token)
    assert token is not None  # authenticate raised otherwise
    payload: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    grant = payload.get("observability")
    if not (isinstance(grant, dict) and grant.get("write") is True):
        raise PermissionDenied("token lacks the observability.write grant")
    return caller


def decompress(body: bytes, encoding: str) -> bytes:
    """gzip / deflate bodies that are still compressed, capped in size.

    aiohttp decompresses a request body by its Content-Encoding already, so the header alone
    does not say: gzip is recognised by its magic bytes, deflate by decoding cleanly.
    """
    data = body
    if body[:2] == b"\x1f\x8b":
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(body)) as fh:
                data = fh.read(MAX_UPLOAD_BYTES + 1)
        except (OSError, EOFError):
            raise InvalidArgument("body is not valid gzip") from None
    elif encoding == "deflate":
        with contextlib.suppress(zlib.error):
            data = zlib.decompressobj().decompress(body, MAX_UPLOAD_BYTES + 1)
    if len(data) > MAX_UPLOAD_BYTES:
        raise InvalidArgument(f"upload larger than {MAX_UPLOAD_BYTES} bytes")
    return data


async def _body(request: web.Request) -> bytes:
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    return decompress(await request.read(), encoding)


# -- logs ------------------------------------------------------------------------------------------


def any_value(value: AnyValue) -> str:
    kind = value.WhichOneof("value")
    if kind is None:
        return ""
    if kind == "string_value":
        return value.string_value
    if kind == "array_value":
        return "[" + ", ".join(any_value(v) for v in value.array_value.values) + "]"
    if kind == "kvlist_value":
        return (
            "{"
            + ", ".join(f"{kv.key}: {any_value(kv.value)}" for kv in value.kvlist_value.values)
            + "}"
        )
    if kind == "bytes_value":
        return value.bytes_value.hex()
    return str(getattr(value, kind))


def attributes(kvs: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    for kv in kvs:
        assert isinstance(kv, KeyValue)
        out[kv.key] = any_value(kv.value)
    return out


def level_of(record: LogRecord) -> str:
    number = record.severity_number
    if number >= 17:
        return "error"
    if number >= 13:
        return "warning"
    if 0 < number < 9:
        return "debug"
    return "info"


def log_lines(
    request: logs_service_pb2.ExportLogsServiceRequest,
) -> Iterator[tuple[LogRecord, dict[str, str]]]:
    """Each record with its attributes merged over its resource's (the record's win)."""
    for resource_logs in request.resource_logs:
        resource = attributes(resource_logs.resource.attributes)
        for scope_logs in resource_logs.scope_logs:
            for record in scope_logs.log_records:
                yield record, {**resource, **attributes(record.attributes)}


def log_event(hub: Hub, caller: Caller, record: LogRecord, attrs: dict[str, str]) -> RecordEvent:
    """One uploaded record as an event-log line of the caller's project."""
    job_id = attrs.get("job_id", "")
    job = hub.core.job(job_id) if job_id else None
    if job is not None and job.project_id != caller.project_id:
        job = None
    if job is None and job_id:
        job = hub.store.get_job(caller.project_id, job_id)
    message = any_value(record.body)
    logger_name = attrs.get("logger.name", "")
    if logger_name:
        message = f"{logger_name}: {message}"
    at_ns = record.time_unix_nano or record.observed_time_unix_nano
    return RecordEvent(
        project_id=caller.project_id,
        kind="agent.log",
        at_ms=at_ns // 1_000_000 if at_ns else hub.clock_ms(),
        message=message[:MAX_MESSAGE_CHARS],
        level=level_of(record),
        room_name=job.room_name if job else "",
        dispatch_id=job.dispatch_id if job else "",
        job_id=job_id,
        worker_id=job.worker_id if job else "",
        agent_name=job.agent_name if job else attrs.get("lk.agent_name", ""),
        owner=caller.owner,
    )


async def upload_logs(request: web.Request) -> web.Response:
    hub: Hub = request.app["hub"]
    caller = caller_for_upload(hub, request)
    msg = logs_service_pb2.ExportLogsServiceRequest()
    _parse(msg, await _body(request))
    count = 0
    for record, attrs in log_lines(msg):
        hub.store.submit_event(log_event(hub, caller, record, attrs))
        count += 1
    _count(request, caller, "logs", count)
    return _ok(logs_service_pb2.ExportLogsServiceResponse())


# -- traces and metrics: counted, not stored -------------------------------------------------------


async def upload_traces(request: web.Request) -> web.Response:
    hub: Hub = request.app["hub"]
    caller = caller_for_upload(hub, request)
    msg = trace_service_pb2.ExportTraceServiceRequest()
    _parse(msg, await _body(request))
    spans = sum(len(s.spans) for r in msg.resource_spans for s in r.scope_spans)
    _count(request, caller, "spans", spans)
    return _ok(trace_service_pb2.ExportTraceServiceResponse())


async def upload_metrics(request: web.Request) -> web.Response:
    hub: Hub = request.app["hub"]
    caller = caller_for_upload(hub, request)
    msg = metrics_service_pb2.ExportMetricsServiceRequest()
    _parse(msg, await _body(request))
    points = 0
    for resource in msg.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                kind = metric.WhichOneof("data")
                points += len(getattr(metric, kind).data_points) if kind else 0
    _count(request, caller, "metric_points", points)
    return _ok(metrics_service_pb2.ExportMetricsServiceResponse())


# -- session reports -------------------------------------------------------------------------------


async def upload_recording(request: web.Request) -> web.Response:
    """Multipart: `header` (MetricsRecordingHeader protobuf), `chat_history`, `audio`: 2xx."""
    hub: Hub = request.app["hub"]
    caller = caller_for_upload(hub, request)
    try:
        reader = await request.multipart()
    except (AssertionError, ValueError, KeyError):
        raise InvalidArgument("body must be multipart/form-data") from None
    header = lk_metrics.MetricsRecordingHeader()
    sizes: dict[str, int] = {}
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            continue
        name = part.name or "?"
        if name == "header":
            _parse(header, bytes(await part.read()))
            sizes[name] = header.ByteSize()
        else:
            sizes[name] = await _drain(part)
    _record_report(hub, caller, header, sizes)
    _count(request, caller, "session_reports", 1)
    return web.json_response({})


async def _drain(part: BodyPartReader) -> int:
    size = 0
    while chunk := await part.read_chunk(65536):
        size += len(chunk)
    return size


def _record_report(hub: Hub, caller: Caller, header: Any, sizes: dict[str, int]) -> None:
    job_id = str(header.job_id)
    job = hub.core.job(job_id) if job_id else None
    if job is not None and job.project_id != caller.project_id:
        job = None
    if job is None and job_id:
        job = hub.store.get_job(caller.project_id, job_id)
    parts = ", ".join(f"{k} {v} bytes" for k, v in sorted(sizes.items()))
    hub.record(
        RecordEvent(
            project_id=caller.project_id,
            kind="agent.session_report",
            at_ms=hub.clock_ms(),
            message=f"session report: {int(header.duration)} ms ({parts}; not kept)",
            room_name=job.room_name if job else "",
            dispatch_id=job.dispatch_id if job else "",
            job_id=job_id,
            worker_id=job.worker_id if job else "",
            agent_name=job.agent_name if job else "",
            owner=caller.owner,
        )
    )


# -- shared ----------------------------------------------------------------------------------------


def _parse(msg: Any, data: bytes) -> None:
    try:
        msg.ParseFromString(data)
    except DecodeError:
        raise InvalidArgument(f"body is not a valid {type(msg).__name__} protobuf") from None


def _ok(msg: Any) -> web.Response:
    return web.Response(body=msg.SerializeToString(), content_type=PROTOBUF)


def _count(request: web.Request, caller: Caller, what: str, n: int) -> None:
    counts: Counter[tuple[str, str]] = request.app["otlp_counts"]
    counts[(caller.project_id, what)] += n


def install(app: web.Application) -> None:
    app["otlp_counts"] = Counter()


def routes() -> list[web.RouteDef]:
    base = "/observability"
    return [
        web.post(f"{base}/logs/otlp/v0", upload_logs),
        web.post(f"{base}/traces/otlp/v0", upload_traces),
        web.post(f"{base}/metrics/otlp/v0", upload_metrics),
        web.post(f"{base}/recordings/v0", upload_recording),
    ]
