"""ZConfig glue: the C{<NEOStorage>} section."""

from ZODB.config import BaseConfig


class NEOStorage(BaseConfig):
    def open(self):
        from neo.client.Storage import Storage
        config = self.config
        return Storage(master_nodes=config.master_nodes, name=config.name,
                       read_only=config.read_only,
                       cache_size=config.cache_size,
                       compress=config.compress, timeout=config.timeout,
                       prefetch=config.prefetch)
