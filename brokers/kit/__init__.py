"""The engine kit: what every engine process stands on, and nothing of any one broker.

bus (ZeroMQ between processes) and localbus (its in-memory stand-in for tests), frames
(every bus header), wire (worker-protocol JSON), routes (the gateways' and brokers' copy of
the function table), process (the base of every process: bus, HELLO, life cycle), broker
(the base of a process with functions and trigger types; handlers get a ``Call``),
pending (calls waiting on other nodes), inputs and decode (declared inputs: parser,
serde-worded errors, schema), ops (the update-ops language of ``state::update`` and
``stream::update``), lmdbenv and commit (one LMDB environment helper, one group
committer), errors (every error code), schema and config (the config file, validated),
units (how a process describes itself to the supervisor), listen (listening sockets
handed down by the supervisor), log (logging setup of entry points).
Invariant: nothing here imports a specific broker.
"""
