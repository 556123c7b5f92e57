"""
Errors that may cross the wire.

Their wire codes are stable: never renumber or reuse one.  Only C{str(exc)}
travels, so each message says everything the other side needs.
"""


class NeoError(Exception):
    """Base class of the errors NEO nodes send each other."""


class ProtocolError(NeoError):
    """The peer violated the protocol (bad version, cluster name, packet)."""


class NotReady(NeoError):
    """The node or the cluster cannot serve this request now."""


class Denied(NeoError):
    """The request is understood but refused (e.g. an invalid neoctl
    command for the current cluster state)."""


class OidNotFound(NeoError):
    """The object exists but has no revision matching the request."""


class OidDoesNotExist(NeoError):
    """No revision of the object has ever been stored."""


class RecordTooLarge(NeoError):
    """A value is larger than L{neo.protocols.arguments.MAX_RECORD}."""


class TransactionNotFound(NeoError):
    """No such transaction is in progress."""


#: Errors every command may answer with.
COMMON_ERRORS = {
    NotReady: b"NOT_READY",
    Denied: b"DENIED",
    OidNotFound: b"OID_NOT_FOUND",
    OidDoesNotExist: b"OID_DOES_NOT_EXIST",
    RecordTooLarge: b"RECORD_TOO_LARGE",
    TransactionNotFound: b"TRANSACTION_NOT_FOUND",
}

#: Errors after which the connection is closed.
FATAL_ERRORS = {ProtocolError: b"PROTOCOL_ERROR"}
