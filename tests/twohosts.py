"""Two engine hosts on this machine sharing one Redis (issue 19): two supervisors with their
own ports, runtime and data dirs, host ids ``A`` and ``B``, each on the same reference-style
config (every ``adapter`` block ``{name: redis, config: {redis_url: ...}}``).

    with two_hosts(redis_server, workers_yaml) as (a, b):
        ...  a.url, b.url: each host's worker port

``workers_yaml`` is the ``workers:`` entries after the worker manager, with ``{redis_url}``
(and ``{port}``, ``{runtime_dir}``, ``{data_dir}``) filled in per host; ``reference_config``
gives the default: state, stream, pubsub, cron and queue, all on Redis. Each pair of hosts
gets a Redis database of its own, so tests never see each other's keys.
"""
from __future__ import annotations

import textwrap
from contextlib import ExitStack, contextmanager
from typing import Any, Iterator

from tests.harness import Engine, free_port, make_config, start_engine


def reference_config(queues: dict[str, Any] | None = None) -> str:
    """The workers of a reference-style config with every adapter on Redis (iii docs,
    advanced/adapters: the same blocks, only the adapter names and URLs differ)."""
    import json
    queue_configs = json.dumps(queues or {"default": {"max_retries": 3, "concurrency": 5}})
    return textwrap.dedent(f"""\
        - name: iii-state
          config:
            adapter: {{name: redis, config: {{redis_url: "{{redis_url}}"}}}}
        - name: iii-stream
          config:
            port: {{stream_port}}
            host: 127.0.0.1
            adapter: {{name: redis, config: {{redis_url: "{{redis_url}}"}}}}
        - name: iii-pubsub
          config:
            adapter: {{name: redis, config: {{redis_url: "{{redis_url}}"}}}}
        - name: iii-cron
          config:
            adapter: {{name: redis, config: {{redis_url: "{{redis_url}}"}}}}
        - name: iii-queue
          config:
            queue_configs: {queue_configs}
            adapter: {{name: redis, config: {{redis_url: "{{redis_url}}"}}}}
        """)


def host_config(workers_yaml: str, redis_url: str, stream_port: int, cluster: str | None = None) -> str:
    """A host's config text, ``{port}``, ``{runtime_dir}`` and ``{data_dir}`` left for
    ``start_engine`` to fill in (the harness's ``make_config`` with those placeholders);
    ``cluster``: an ``engine.cluster`` block (flow-style YAML) to add."""
    body = workers_yaml.replace("{redis_url}", redis_url).replace("{stream_port}", str(stream_port))
    text = make_config(port="{port}", runtime_dir="{runtime_dir}", data_dir="{data_dir}",  # type: ignore[arg-type]
                       extra_workers_yaml=body)
    return text if cluster is None else text.replace("engine:\n", f"engine:\n  cluster: {cluster}\n", 1)


@contextmanager
def two_hosts(redis_server: Any, workers_yaml: str | None = None, *, wait_for: str | None = None,
              env: dict[str, str] | None = None, clusters: tuple[str, str] | None = None
              ) -> Iterator[tuple[Engine, Engine]]:
    """Hosts A and B on one fresh Redis database; both stopped when the block ends.
    ``clusters``: each host's ``engine.cluster`` block (flow-style YAML)."""
    url = redis_server.url(redis_server.fresh_db())
    workers_yaml = reference_config() if workers_yaml is None else workers_yaml
    with ExitStack() as stack:
        hosts = []
        for i, name in enumerate(("A", "B")):
            stream_port = free_port()
            text = host_config(workers_yaml, url, stream_port, clusters[i] if clusters else None)
            eng = start_engine(config_text=text, wait_for=wait_for,
                               env={"III_HOST_ID": name, **(env or {})})
            eng.host_id = name  # type: ignore[attr-defined]
            eng.stream_port = stream_port  # type: ignore[attr-defined]
            eng.redis_url = url  # type: ignore[attr-defined]
            stack.callback(eng.stop)
            hosts.append(eng)
        yield hosts[0], hosts[1]
