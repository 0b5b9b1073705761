"""The engine kit: what every engine process stands on, and nothing of any one broker.

bus (ZeroMQ between processes), frames (bus headers), wire (worker-protocol JSON), routes
(the gateways' and brokers' copy of the function table), broker (the base of a process
with functions and trigger types), errors (every error code), schema and config (the
config file, validated), units (how a process describes itself to the supervisor), listen
(listening sockets handed down by the supervisor), log (logging setup of entry points).
Invariant: nothing here imports a specific broker.
"""
