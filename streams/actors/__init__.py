"""The actors: one owner per aggregate key (asset, engagement), on the shared runner."""
