"""The master's configuration, validated once from its options."""

from dataclasses import dataclass

from neo.cluster.partition_table import PartitionTable


@dataclass(frozen=True)
class MasterConfig:
    cluster: str
    masters: tuple
    bind: tuple
    partitions: int = 12
    replicas: int = 0
    stripe: int = PartitionTable.STRIPE
    addressFile: str = None

    @classmethod
    def fromOptions(cls, options) -> "MasterConfig":
        return cls(cluster=options["cluster"], masters=tuple(options["masters"]),
                   bind=options["bind"], partitions=options["partitions"],
                   replicas=options["replicas"], stripe=options["stripe"],
                   addressFile=options["address-file"])
