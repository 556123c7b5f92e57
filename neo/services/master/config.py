"""The master's configuration, validated once from its options."""

from dataclasses import dataclass


@dataclass(frozen=True)
class MasterConfig:
    cluster: str
    masters: tuple
    bind: tuple
    partitions: int = 12
    replicas: int = 0
    addressFile: str = None

    @classmethod
    def fromOptions(cls, options) -> "MasterConfig":
        return cls(cluster=options["cluster"], masters=tuple(options["masters"]),
                   bind=options["bind"], partitions=options["partitions"],
                   replicas=options["replicas"],
                   addressFile=options["address-file"])
