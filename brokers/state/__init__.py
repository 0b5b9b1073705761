"""The ``iii-state`` broker: ``state::*`` functions on LMDB and the ``state`` trigger type.

``ops`` (update-ops language) and ``core`` are pure; ``store`` owns LMDB; ``service`` is the
I/O shell on the engine bus.
"""
