"""Projections: fold the log into PostgreSQL (what the api reads) and ClickHouse (analytics)."""
