"""The benchmark harness: `python -m perf run [--quick] [--only NAME...]`.

It measures the engine (started with `iii-supervisor start`) and two baselines (a bare
WebSocket echo and a bare single-process relay) in the same run, with the same minimal
protocol clients, and prints every engine figure as a ratio to its baseline. See README.md.
"""
