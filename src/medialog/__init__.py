"""medialog: an event-sourced, actor-based media backend."""
