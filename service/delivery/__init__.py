"""The background side: the stream, consumers, sweeper, wake-ups, pruning."""
