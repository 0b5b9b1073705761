"""The WebSocket gateway (``iii-worker-manager``): SDK connections and the call data path."""
