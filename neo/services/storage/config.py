"""The storage node's configuration, validated once from its options."""

from dataclasses import dataclass


@dataclass(frozen=True)
class StorageConfig:
    cluster: str
    masters: tuple
    bind: tuple
    adapter: str = "SQLite"
    database: str = None
    reset: bool = False
    addressFile: str = None
    #: Resolve conflicting stores on the node when it can
    #: (L{neo.services.storage.resolution}).
    resolveConflicts: bool = True

    @classmethod
    def fromOptions(cls, options) -> "StorageConfig":
        return cls(cluster=options["cluster"], masters=tuple(options["masters"]),
                   bind=options["bind"], adapter=options["adapter"],
                   database=options["database"], reset=bool(options["reset"]),
                   addressFile=options["address-file"],
                   resolveConflicts=not options["no-node-resolution"])
