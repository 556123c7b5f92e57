"""The storage node: partitions of the data, with history, in SQL."""
