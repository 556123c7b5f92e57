"""The node roles, each a Twisted MultiService tree: master, storage, admin."""
