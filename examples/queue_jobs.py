"""Queues: hand work to a named queue with ``TriggerAction.Enqueue`` and let it retry.

Shows ``trigger`` with ``TriggerAction.Enqueue(queue="default")``: the engine answers with
a ``messageReceiptId`` as soon as the job is stored (durably), and the ``iii-queue`` worker
delivers the job to ``emails::send`` later. The first delivery of each job fails on
purpose; the queue retries it after the queue's backoff (1 s on ``default``) and the
second delivery succeeds. The queues are those of ``conf/iii-config.yaml``: ``default``
(standard, 5 attempts) and ``payment`` (FIFO per ``transaction_id``).

Run it (two shells, from the repository's top):

    .venv/bin/iii-supervisor start conf/iii-config.yaml
    .venv/bin/python examples/queue_jobs.py

Exits with 0 once both jobs have been delivered and retried, 1 otherwise.
"""
from __future__ import annotations

import os
import sys
import threading
from collections import Counter

from iii import TriggerAction, register_worker

URL = os.environ.get("III_URL", "ws://127.0.0.1:49134")
_print_lock = threading.Lock()


def say(line: str) -> None:
    """One whole line at a time: deliveries print from the SDK's handler threads."""
    with _print_lock:
        print(line, flush=True)


JOBS = [{"to": "ada@example.com", "subject": "welcome"}, {"to": "bob@example.com", "subject": "receipt"}]


def main() -> int:
    iii = register_worker(URL)
    attempts: Counter[str] = Counter()
    sent: list[str] = []
    all_sent = threading.Event()
    lock = threading.Lock()

    def send_email(job: dict) -> dict:
        with lock:
            attempts[job["to"]] += 1
            attempt = attempts[job["to"]]
        if attempt == 1:
            say(f"  emails::send {job['to']}: attempt 1 fails (the queue will retry)")
            raise ConnectionError("mail server busy")
        say(f"  emails::send {job['to']}: attempt {attempt} sent {job['subject']!r}")
        with lock:
            sent.append(job["to"])
            if len(sent) == len(JOBS):
                all_sent.set()
        return {"sent": True}

    try:
        if not iii.wait_connected(5):
            print(f"could not reach the engine at {URL}", file=sys.stderr)
            return 1
        iii.register_function("emails::send", send_email, description="Send one email")

        for job in JOBS:
            receipt = iii.trigger({"function_id": "emails::send", "payload": job,
                                   "action": TriggerAction.Enqueue(queue="default")})
            say(f"enqueued {job['to']} to 'default': messageReceiptId {receipt['messageReceiptId']}")

        if not all_sent.wait(15):
            print(f"not every job was delivered: attempts {dict(attempts)}", file=sys.stderr)
            return 1
        say(f"both jobs done after {sum(attempts.values())} deliveries")
        return 0
    finally:
        iii.shutdown()


if __name__ == "__main__":
    sys.exit(main())
