"""C{twistd neo-storage}: options and service assembly."""

from twisted.python import usage

from neo.lib.config import NodeOptions
from neo.services.storage.config import SYNC_MODES

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
        ["sync", None, None, "SQLite: when commits are synced to disk."
         " FULL [default]: every commit, as FileStorage does, so that a"
         " commit survives a power loss. NORMAL: only when the write-ahead"
         " log is copied into the database, so that a commit survives a"
         " crash of the node, but a power loss or a crash of the machine may"
         " lose the last ones (faster commits; replicas on other machines"
         " make up for it). MySQL: the server's"
         " innodb_flush_log_at_trx_commit decides."],
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
        if adapter == "SQLite":
            sync = (self["sync"] or SYNC_MODES[0]).upper()
            if sync not in SYNC_MODES:
                raise usage.UsageError(
                    f"unknown --sync {self['sync']!r}: use one of "
                    + ", ".join(SYNC_MODES))
            self["sync"] = sync
        elif self["sync"] is not None:
            raise usage.UsageError(
                "--sync is for SQLite: with MySQL, the server's"
                " innodb_flush_log_at_trx_commit decides when commits are"
                " synced to disk")
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
