"""The engine supervisor: reads the config, spawns one OS process per planned unit,
restarts crashed ones with backoff, answers a ZeroMQ control socket, stops all in order.
"""
