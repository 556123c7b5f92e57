"""C{twistd neo-storage}: options and service assembly."""

from twisted.python import usage

from neo.lib.config import NodeOptions

ADAPTERS = ("SQLite",)


class Options(NodeOptions):
    role = "storage"
    synopsis = "[options]"
    longdesc = ("Run a NEO storage node: it keeps some partitions of the"
                " data, with their history, in its database.")
    optParameters = NodeOptions.optParameters + [
        ["adapter", "a", None, "Database backend: " + ", ".join(ADAPTERS)
         + " [default: SQLite]."],
        ["database", "d", None, "The node's database (SQLite: a file path;"
         " required)."],
    ]
    optFlags = [["reset", None, "Wipe this node's data before starting."]]
    nodeDefaults = dict(NodeOptions.nodeDefaults, adapter="SQLite")
    required = ("cluster", "database")

    def checkOptions(self):
        names = {a.lower(): a for a in ADAPTERS}
        adapter = names.get(self["adapter"].lower())
        if adapter is None:
            raise usage.UsageError(
                f"unknown adapter {self['adapter']!r}: use one of "
                + ", ".join(ADAPTERS))
        self["adapter"] = adapter


def makeService(options):
    from twisted.internet import reactor

    from neo.lib.tap import processCallbacks
    from neo.services.storage.config import StorageConfig
    from neo.services.storage.node import StorageNode
    fatal, shutdown = processCallbacks(reactor)
    return StorageNode(StorageConfig.fromOptions(options), reactor, fatal,
                       shutdown)
