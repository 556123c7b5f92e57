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
    #: Off by default: with it, a resolved update was seen lost under
    #: contention on two storage nodes (README, known issue).
    resolveConflicts: bool = False

    @classmethod
    def fromOptions(cls, options) -> "StorageConfig":
        return cls(cluster=options["cluster"], masters=tuple(options["masters"]),
                   bind=options["bind"], adapter=options["adapter"],
                   database=options["database"], reset=bool(options["reset"]),
                   addressFile=options["address-file"],
                   resolveConflicts=bool(options["node-resolution"])
                   and not options["no-node-resolution"])
