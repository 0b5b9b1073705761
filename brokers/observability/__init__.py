"""The observability process (``iii-observability``): spans, logs and metrics of the engine
and its SDKs, the ``log`` and ``trace`` trigger types, Prometheus ``/metrics``, ``/healthz``
and ``/readyz`` (workers-b.md §4, protocol.md §9)."""
