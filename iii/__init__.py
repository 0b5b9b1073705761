"""iii: the worker SDK's public names (lazily re-exported from ``sdk``) and the engine core.

Importing ``iii`` loads no zmq, lmdb or engine module; the SDK names resolve on first use.
"""
