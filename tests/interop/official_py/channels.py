"""Channel scenarios on the OFFICIAL Python ``iii-sdk``, driven by tests/interop/test_channels_sdks.py.

Run in the official SDK's own venv (it installs a module named ``iii`` too). Env ``III_URL``;
JSON lines on stdout. Roles (argv):

  serve PREFIX        register PREFIX::digest (a reader: its bytes, their sha256 and the text
                      messages beside them) and PREFIX::invert (a reader and a writer: every chunk
                      back with its bits flipped with a "progress" text message each, then "done"), print
                      {"ready": true} and serve until stdin closes
  send FID SIZE       make a channel, write SIZE bytes in 64 KiB writes with text messages
                      between them, call FID with the reader ref, print the answer
  roundtrip FID SIZE  make two channels, call FID with one's reader and the other's writer,
                      write SIZE bytes and read the answer stream at the same time
  pinned SIZE         for the 10 MB test: make a channel, open both of its sockets, print their
                      local ports, wait for a line on stdin ("go" or "again"); on "go" stream
                      SIZE bytes from writer to reader and print what arrived
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
import time

from iii import register_worker
from iii.helpers import create_channel_async

CHUNK = 64 * 1024
INVERT = bytes(255 - i for i in range(256))
"""What PREFIX::invert does to each byte (every bit flipped: the same in both SDKs)."""


def pattern(size: int) -> bytes:
    block = hashlib.sha256(b"iii-channels").digest() * (CHUNK // 32)
    return (block * (size // len(block) + 1))[:size]


def emit(obj: object) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def digest(data: dict) -> dict:
    reader = data["reader"]
    messages: list[str] = []
    reader.on_message(messages.append)
    raw = await reader.read_all()
    return {"bytes": len(raw), "sha256": hashlib.sha256(raw).hexdigest(), "messages": messages}


async def invert(data: dict) -> dict:
    reader, writer = data["reader"], data["writer"]
    n = 0
    async for chunk in reader:
        n += 1
        await writer.send_message_async(json.dumps({"type": "progress", "chunks": n}))
        await writer.write(chunk.translate(INVERT))
    await writer.send_message_async(json.dumps({"type": "done", "chunks": n}))
    await writer.close_async()
    return {"chunks": n}


async def write_with_messages(writer, payload: bytes) -> None:
    for i in range(0, len(payload), CHUNK):
        if i // CHUNK in (1, 3):
            await writer.send_message_async(f"message at chunk {i // CHUNK}")
        await writer.write(payload[i:i + CHUNK])
    await writer.close_async()


async def send(data: dict) -> dict:
    ch = await create_channel_async(IIIC)
    payload = pattern(data["size"])
    call = asyncio.ensure_future(IIIC.trigger_async(
        {"function_id": data["fid"], "payload": {"reader": ch.reader_ref.model_dump()}, "timeout_ms": 60000}))
    await write_with_messages(ch.writer, payload)
    return {"result": await call, "sha256": hashlib.sha256(payload).hexdigest()}


async def roundtrip(data: dict) -> dict:
    inbound, outbound = await create_channel_async(IIIC), await create_channel_async(IIIC)
    payload = pattern(data["size"])
    call = asyncio.ensure_future(IIIC.trigger_async({"function_id": data["fid"], "payload": {
        "reader": inbound.reader_ref.model_dump(), "writer": outbound.writer_ref.model_dump()},
        "timeout_ms": 60000}))
    messages: list[str] = []
    outbound.reader.on_message(messages.append)
    _, back = await asyncio.gather(write_with_messages(inbound.writer, payload), outbound.reader.read_all())
    return {"result": await call, "ok": back == payload.translate(INVERT), "bytes": len(back),
            "messages": [json.loads(m) for m in messages]}


async def pinned(data: dict) -> dict:
    loop = asyncio.get_running_loop()
    while True:
        ch = await create_channel_async(IIIC)
        wws = await ch.writer._ensure_connected()  # the SDK opens its sockets lazily: open them now
        rws = await ch.reader._ensure_connected()
        emit({"ports": [wws.local_address[1], rws.local_address[1]]})
        line = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
        if line == "go":
            break
        await ch.writer.close_async()
        await ch.reader.read_all()
    payload = pattern(data["size"])
    _, got = await asyncio.gather(write_with_messages(ch.writer, payload), ch.reader.read_all())
    return {"bytes": len(got), "ok": got == payload}


IIIC = None


def main() -> None:
    global IIIC
    role = sys.argv[1]
    IIIC = iii = register_worker(os.environ["III_URL"])
    if role == "serve":
        prefix = sys.argv[2]
        iii.register_function(f"{prefix}::digest", digest)
        iii.register_function(f"{prefix}::invert", invert)
        time.sleep(0.3)
        emit({"ready": True})
        sys.stdin.read()
        return
    # the scenario runs as a function of this worker, on the SDK's own loop
    driver = f"chan-driver::{role}::{os.getpid()}"
    iii.register_function(driver, {"send": send, "roundtrip": roundtrip, "pinned": pinned}[role])
    time.sleep(0.3)
    args = {"size": int(sys.argv[-1])}
    if role != "pinned":
        args["fid"] = sys.argv[2]
    emit(iii.trigger({"function_id": driver, "payload": args, "timeout_ms": 120000}))


if __name__ == "__main__":
    main()
    os._exit(0)  # the SDK's background threads would keep the process alive
