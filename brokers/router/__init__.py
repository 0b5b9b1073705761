"""The router: the registry of functions, triggers, trigger types and workers; ``engine::*``."""
