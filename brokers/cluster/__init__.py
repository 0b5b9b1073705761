"""The cluster process: calls routed to whichever engine host holds the worker (issue 19)."""
