"""C{twistd neo-storage}: options and service assembly."""

from twisted.python import usage

from neo.lib.config import NodeOptions

ADAPTERS = ("SQLite", "MySQL")


class Options(NodeOptions):
    role = "storage"
    synopsis = "[options]"
    longdesc = ("Run a NEO storage node: it keeps some partitions of the"
                " data, with their history, in its database.")
    optParameters = NodeOptions.optParameters + [
        ["adapter", "a", None, "Database backend: " + ", ".join(ADAPTERS)
         + " [default: SQLite]."],
        ["database", "d", None, "The node's database (required). SQLite: a"
         " file path. MySQL: [user[:password]@]database[@host[:port]] or"
         " [user[:password]@]database/path/to/unix_socket (created if the"
         " user may)."],
    ]
    optFlags = [["reset", None, "Wipe this node's data before starting."],
                ["no-node-resolution", None, "Leave the resolution of"
                 " conflicting stores to the clients (by default the node"
                 " resolves small ones itself, importing the classes their"
                 " records name, as ZODB's conflict resolution does)."]]
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
        if adapter == "MySQL":
            from neo.services.storage.mysql import parseDSN
            try:
                parseDSN(self["database"])
            except ValueError as e:
                raise usage.UsageError(str(e))


def makeService(options):
    from twisted.internet import reactor

    from neo.lib.tap import processCallbacks
    from neo.services.storage.config import StorageConfig
    from neo.services.storage.node import StorageNode
    fatal, shutdown = processCallbacks(reactor)
    return StorageNode(StorageConfig.fromOptions(options), reactor, fatal,
                       shutdown)
