"""The storage node's configuration, validated once from its options."""

from dataclasses import dataclass

#: SQLite's synchronous modes a storage node may use, the default first.
SYNC_MODES = ("FULL", "NORMAL")


@dataclass(frozen=True)
class StorageConfig:
    cluster: str
    masters: tuple
    bind: tuple
    adapter: str = "SQLite"
    database: str = None
    reset: bool = False
    #: SQLite's synchronous mode: FULL syncs every commit to disk.
    sync: str = SYNC_MODES[0]
    addressFile: str = None
    #: Resolve conflicting stores on the node when it can
    #: (L{neo.services.storage.resolution}).
    resolveConflicts: bool = True

    @classmethod
    def fromOptions(cls, options) -> "StorageConfig":
        return cls(cluster=options["cluster"], masters=tuple(options["masters"]),
                   bind=options["bind"], adapter=options["adapter"],
                   database=options["database"], reset=bool(options["reset"]),
                   sync=options["sync"] or SYNC_MODES[0],
                   addressFile=options["address-file"],
                   resolveConflicts=not options["no-node-resolution"])
