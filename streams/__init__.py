"""The Faust side of medialog: actors (one owner per aggregate key) and workers."""
