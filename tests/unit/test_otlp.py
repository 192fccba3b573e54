"""OTLP upload parsing: bodies (gzip or not), attribute values, severities, records to lines."""

from __future__ import annotations

import gzip
import zlib

import pytest
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    ArrayValue,
    KeyValue,
    KeyValueList,
)
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from callboard.protocol.errors import InvalidArgument
from callboard.server import otlp


def test_decompress_gzip_deflate_and_plain() -> None:
    data = b"hello" * 100
    assert otlp.decompress(gzip.compress(data), "gzip") == data
    assert otlp.decompress(gzip.compress(data), "") == data  # by its magic bytes
    assert otlp.decompress(data, "gzip") == data  # aiohttp already decompressed it
    assert otlp.decompress(zlib.compress(data), "deflate") == data
    assert otlp.decompress(data, "deflate") == data


def test_decompress_refuses_broken_and_huge_bodies() -> None:
    with pytest.raises(InvalidArgument):
        otlp.decompress(b"\x1f\x8b" + b"junk", "gzip")
    with pytest.raises(InvalidArgument):
        otlp.decompress(gzip.compress(b"\0" * (otlp.MAX_UPLOAD_BYTES + 1)), "gzip")


def test_any_value_renders_every_kind() -> None:
    assert otlp.any_value(AnyValue(string_value="s")) == "s"
    assert otlp.any_value(AnyValue(int_value=3)) == "3"
    assert otlp.any_value(AnyValue(bool_value=True)) == "True"
    assert otlp.any_value(AnyValue(bytes_value=b"\x01")) == "01"
    assert otlp.any_value(AnyValue()) == ""
    arr = AnyValue(array_value=ArrayValue(values=[AnyValue(int_value=1), AnyValue(int_value=2)]))
    assert otlp.any_value(arr) == "[1, 2]"
    kv = AnyValue(kvlist_value=KeyValueList(values=[KeyValue(key="a", value=AnyValue(
        string_value="b"))]))
    assert otlp.any_value(kv) == "{a: b}"


@pytest.mark.parametrize(("number", "level"), [(0, "info"), (5, "debug"), (9, "info"),
                                               (13, "warning"), (17, "error"), (21, "error")])
def test_levels(number: int, level: str) -> None:
    assert otlp.level_of(logs_pb2.LogRecord(severity_number=number)) == level  # type: ignore[arg-type]


def test_record_attributes_override_the_resource() -> None:
    def kv(k: str, v: str) -> KeyValue:
        return KeyValue(key=k, value=AnyValue(string_value=v))

    req = logs_service_pb2.ExportLogsServiceRequest(resource_logs=[logs_pb2.ResourceLogs(
        resource=Resource(attributes=[kv("job_id", "AJ_resource"), kv("room_id", "RM_1")]),
        scope_logs=[logs_pb2.ScopeLogs(log_records=[
            logs_pb2.LogRecord(body=AnyValue(string_value="one"), attributes=[kv("job_id",
                                                                                 "AJ_1")]),
            logs_pb2.LogRecord(body=AnyValue(string_value="two")),
        ])])])
    lines = list(otlp.log_lines(req))
    assert [(r.body.string_value, a["job_id"]) for r, a in lines] == [("one", "AJ_1"),
                                                                     ("two", "AJ_resource")]
    assert lines[1][1]["room_id"] == "RM_1"
