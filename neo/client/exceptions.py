"""Exceptions the NEO client raises to ZODB applications."""

import transaction.interfaces
from ZODB.POSException import StorageError


class ClientDisconnected(StorageError, transaction.interfaces.TransientError):
    """
    The cluster cannot be reached (or did not answer in time).  Like ZEO's,
    it is transient: application retry loops try the transaction again.
    """


class NEOStorageError(StorageError):
    """The cluster refused a request."""
