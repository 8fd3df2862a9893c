"""What every role shares: its dependencies, the one way to write to the log, retrying, and
handling a record once."""
