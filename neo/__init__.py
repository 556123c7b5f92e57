"""NEO: a distributed, redundant and scalable storage for ZODB, on Twisted."""

__version__ = "0.1.0"
