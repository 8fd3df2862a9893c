"""The PostgreSQL projections (what the api reads): assets, and engagement with its fold and its
rebuild; each applies its batches through ``projections.runner``."""
