"""Channels through our SDK (``iii.helpers.create_channel``, ``iii.channels``) on the real
engine: a sender hands a ref to a processor that reads it whole (messages to
``on_message``), the other way round from a ``def`` handler with the sync API, 10 MB in
64 KiB frames from a foreign loop, and HTTP handlers written with our SDK that stream
their response (set_status, set_headers, chunks) and read ``request_body``, on a real
HTTP client.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import json
import os
import threading
import uuid
from typing import Any, Iterator

import pytest

from tests import webclient
from tests.harness import Engine, free_port, running_engine
from tests.sdkclient import our_worker, trigger_when_found, wait_registered


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    port = free_port()
    with running_engine(extra_workers_yaml=f"- name: iii-http\n  config: {{host: 127.0.0.1, port: {port}, "
                                           "default_timeout: 10000}\n") as eng:
        eng.http_port = port  # type: ignore[attr-defined]
        yield eng


@pytest.fixture
def pair(engine: Engine) -> Iterator[tuple[Any, Any]]:
    """(sender, processor): two workers of our SDK."""
    tag = uuid.uuid4().hex[:6]
    with our_worker(engine.url, f"sender-{tag}", timeout_ms=30_000) as sender, \
            our_worker(engine.url, f"processor-{tag}", timeout_ms=30_000) as processor:
        yield sender, processor


def in_thread(fn: Any, *args: Any) -> concurrent.futures.Future[Any]:
    pool = concurrent.futures.ThreadPoolExecutor(1)
    fut = pool.submit(fn, *args)
    pool.shutdown(wait=False)
    return fut


def test_sender_to_processor_read_all_with_messages(pair: tuple[Any, Any]) -> None:
    from iii.channels import ChannelReader
    from iii.helpers import create_channel

    sender, processor = pair
    fid = f"proc::{uuid.uuid4().hex[:8]}"

    async def process(data: dict) -> dict:
        reader = data["input"]
        assert isinstance(reader, ChannelReader) and data["label"] == "job-1"
        messages: list[str] = []
        reader.on_message(messages.append)
        body = await reader.read_all()
        return {"body": body.decode(), "messages": messages}

    processor.register_function(fid, process)
    channel = create_channel(sender)
    assert channel.reader_ref.direction == "read" and channel.writer_ref.direction == "write"
    answer = in_thread(trigger_when_found, sender, fid, {"input": channel.reader_ref, "label": "job-1"})
    # the sync API from a thread without a loop: each call is done when it returns
    channel.writer.send_message(json.dumps({"type": "meta", "n": 1}))
    channel.writer.stream.write(b"hello, ")
    channel.writer.send_message("between")
    channel.writer.stream.write(b"channel")
    channel.writer.close()
    assert answer.result(20) == {"body": "hello, channel",
                                 "messages": [json.dumps({"type": "meta", "n": 1}), "between"]}


def test_processor_writes_back_from_a_sync_handler(pair: tuple[Any, Any]) -> None:
    from iii.channels import ChannelWriter
    from iii.helpers import create_channel

    sender, processor = pair
    fid = f"proc::{uuid.uuid4().hex[:8]}"
    seen: list[str] = []

    def produce(data: dict) -> dict:  # runs in the SDK's pool: the sync API blocks until done
        out = data["output"]
        assert isinstance(out, ChannelWriter)
        seen.append(threading.current_thread().name)
        out.send_message("progress 0")
        for i in range(3):
            out.stream.write(f"part {i};".encode())
        asyncio.run(out.send_message_async("progress 100"))  # the async API from a foreign loop
        out.stream.end(b"end")
        return {"parts": 3}

    processor.register_function(fid, produce)
    channel = create_channel(sender)
    messages: list[str] = []
    channel.reader.on_message(messages.append)
    answer = in_thread(trigger_when_found, sender, fid, {"output": channel.writer_ref})
    body = asyncio.run(channel.reader.read_all())
    assert answer.result(20) == {"parts": 3}
    assert body == b"part 0;part 1;part 2;end"
    assert messages == ["progress 0", "progress 100"]
    assert seen and seen[0].startswith("iii-handler")


def test_ten_megabytes_in_frames_of_at_most_64_kib(pair: tuple[Any, Any]) -> None:
    from iii.helpers import create_channel_async

    sender, processor = pair
    fid = f"proc::{uuid.uuid4().hex[:8]}"
    data = os.urandom(10 * 1024 * 1024 + 123)

    async def digest(payload: dict) -> dict:
        h, n, largest, frames = hashlib.sha256(), 0, 0, 0
        async for chunk in payload["reader"].stream:
            h.update(chunk)
            n, largest, frames = n + len(chunk), max(largest, len(chunk)), frames + 1
        return {"sha": h.hexdigest(), "n": n, "largest": largest, "frames": frames}

    processor.register_function(fid, digest)
    wait_registered(sender, fid)  # the call hands over a one-use reader ref: it is not retried

    async def send() -> dict:
        channel = await create_channel_async(sender)  # on our own loop, not the SDK's
        call = asyncio.ensure_future(sender.trigger_async({"function_id": fid,
                                                           "payload": {"reader": channel.reader_ref}}))
        await channel.writer.write(data)
        await channel.writer.close_async()
        return await asyncio.wait_for(call, 60)

    got = asyncio.run(send())
    assert got["sha"] == hashlib.sha256(data).hexdigest() and got["n"] == len(data)
    assert got["largest"] <= 64 * 1024 and got["frames"] >= len(data) // (64 * 1024)


def test_async_iteration_from_a_foreign_loop_and_close(pair: tuple[Any, Any]) -> None:
    from iii.helpers import create_channel

    sender, processor = pair
    fid = f"proc::{uuid.uuid4().hex[:8]}"

    async def produce(data: dict) -> None:
        for i in range(5):
            await data["w"].write(bytes([i]) * 10)
        await data["w"].close_async()

    processor.register_function(fid, produce)
    channel = create_channel(sender)
    in_thread(trigger_when_found, sender, fid, {"w": channel.writer_ref}).result(20)

    async def consume() -> list[bytes]:
        return [chunk async for chunk in channel.reader]

    assert asyncio.run(consume()) == [bytes([i]) * 10 for i in range(5)]
    asyncio.run(channel.reader.close_async())


# -- HTTP ------------------------------------------------------------------------------------
@pytest.fixture
def web_worker(engine: Engine) -> Iterator[Any]:
    with our_worker(engine.url, f"http-ch-{uuid.uuid4().hex[:6]}", timeout_ms=30_000) as iii:
        yield iii


def route(iii: Any, method: str, handler: Any) -> str:
    path = f"/sdkch/{uuid.uuid4().hex[:8]}"
    fid = f"web::{uuid.uuid4().hex[:8]}"
    iii.register_function(fid, handler)
    iii.register_trigger({"type": "http", "function_id": fid, "config": {"api_path": path, "http_method": method}})
    return path


def test_http_handler_streams_its_response(engine: Engine, web_worker: Any) -> None:
    async def stream(req: dict) -> None:
        res = req["response"]
        await res.send_message_async(json.dumps({"type": "set_status", "status_code": 201}))
        await res.send_message_async(json.dumps({"type": "set_headers",
                                                 "headers": {"content-type": "text/plain", "x-sdk": "ours"}}))
        for i in range(5):
            await res.write(f"chunk {i}\n".encode())
        await res.write(b"x" * 200_000)  # several frames
        await res.close_async()
        return None

    path = route(web_worker, "GET", stream)
    r = webclient.request(engine.http_port, "GET", path, timeout=20)  # type: ignore[attr-defined]
    assert r.status == 201
    assert r.getheader("content-type") == "text/plain" and r.getheader("x-sdk") == "ours"
    assert r.read() == b"".join(f"chunk {i}\n".encode() for i in range(5)) + b"x" * 200_000


def test_sync_http_handler_streams_with_the_stream_api(engine: Engine, web_worker: Any) -> None:
    def stream(req: dict) -> None:
        res = req["response"]
        res.send_message(json.dumps({"type": "set_status", "status_code": 200}))
        res.send_message(json.dumps({"type": "set_headers", "headers": {"content-type": "application/x-ndjson"}}))
        for i in range(3):
            res.stream.write(json.dumps({"i": i}).encode() + b"\n")
        res.stream.end()
        return None

    path = route(web_worker, "GET", stream)
    r = webclient.request(engine.http_port, "GET", path, timeout=20)  # type: ignore[attr-defined]
    assert r.status == 200 and r.getheader("content-type") == "application/x-ndjson"
    assert [json.loads(line) for line in r.read().splitlines()] == [{"i": 0}, {"i": 1}, {"i": 2}]


def test_http_handler_reads_request_body(engine: Engine, web_worker: Any) -> None:
    body = os.urandom(3 * 1024 * 1024)

    async def upload(req: dict) -> dict:
        got = await req["request_body"].read_all()
        return {"status_code": 200, "body": {"n": len(got), "sha": hashlib.sha256(got).hexdigest()}}

    def upload_sync(req: dict) -> dict:
        got = asyncio.run(req["request_body"].read_all())
        return {"status_code": 200, "body": {"n": len(got), "sha": hashlib.sha256(got).hexdigest()}}

    for handler in (upload, upload_sync):
        path = route(web_worker, "POST", handler)
        r = webclient.request(engine.http_port, "POST", path, body=body,  # type: ignore[attr-defined]
                              headers={"content-type": "application/octet-stream"}, timeout=30)
        assert r.status == 200, handler.__name__
        assert json.loads(r.read()) == {"n": len(body), "sha": hashlib.sha256(body).hexdigest()}
