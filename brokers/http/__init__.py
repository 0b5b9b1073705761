"""The HTTP worker (``iii-http``): HTTP triggers served on their own port (workers-b §2)."""
