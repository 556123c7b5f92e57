# -*- test-case-name: tests.unit.test_storage_locks -*-
"""
Conflict resolution on the storage node.

A store based on a serial that is no longer the last one conflicts.  When
the node has both revisions at hand in memory (the last one, and the one
it replaced, which the store was based on) and they are small, it runs
ZODB's own conflict resolution itself (C{_p_resolveConflict} of the
object's class, when this node can import it): the client learns that the
object was resolved, instead of resolving it in a round trip of its own
while the transaction's other locks are held.  Anything else (a class not
importable here, a resolution that fails, records not in memory) is left
to the client, as a plain conflict.

A resolution that fails although the class was imported here fails the
same way in the client, which runs the same code on the same states: such
a conflict is L{UNRESOLVABLE}, and the node gives the transaction up at
once (its client can only abort it) rather than let it wait for its other
locks.
"""

import zlib

from ZODB.ConflictResolution import BadClass, find_global
from ZODB.ConflictResolution import tryToResolveConflict
from ZODB.POSException import ConflictError
from ZODB.utils import get_pickle_metadata

#: What L{resolve} returns for a conflict that no client can resolve.
UNRESOLVABLE = "unresolvable"

#: Records larger than this are left to the client: resolution runs in
#: the reactor thread, and must stay short.
LARGEST = 64 * 1024

_ZLIB = 1


class _Revisions:
    """What ZODB's resolution asks of a storage: the revision the new
    state was based on (the committed one is given to it)."""

    def __init__(self, old):
        self._old = old

    def loadSerial(self, oid, serial):
        return self._old

    @staticmethod
    def _crs_untransform_record_data(data):
        return data

    _crs_transform_record_data = _crs_untransform_record_data


def _raw(compression, data):
    return zlib.decompress(data) if compression == _ZLIB else data


def resolve(oid, old, committed, compression, data):
    """
    Resolve a conflicting store.

    @param old: C{(serial, compression, data)} the store was based on.
    @param committed: C{(serial, compression, data)}, the last revision.
    @return: C{(compression, data)} of the resolved state; None if the
        client may still resolve it; or L{UNRESOLVABLE}.
    """
    if old[2] is None or committed[2] is None or not committed[2] \
            or max(len(old[2]), len(committed[2]), len(data)) > LARGEST:
        return None
    new = _raw(compression, data)
    try:
        resolved = tryToResolveConflict(
            _Revisions(_raw(old[1], old[2])), oid, committed[0], old[0],
            new, _raw(committed[1], committed[2]))
    except ConflictError:
        return UNRESOLVABLE if _importable(new) else None
    if compression == _ZLIB:
        packed = zlib.compress(resolved)
        if len(packed) < len(resolved):
            return _ZLIB, packed
    return 0, resolved


def hopeless(compression, data):
    """
    Whether a store of this record that conflicts cannot be resolved by
    anyone: its class is importable here and has no C{_p_resolveConflict}
    (so that no need to wait for the object's lock to know it).
    """
    if len(data) > LARGEST:
        return False
    klass = _class(_raw(compression, data))
    return klass is not None and \
        getattr(klass, "_p_resolveConflict", None) is None


def _importable(pickle):
    """Whether the class of a record can be imported here."""
    return _class(pickle) is not None


def _class(pickle):
    """The class a record names, or None if it cannot be imported here."""
    try:
        module, name = get_pickle_metadata(pickle)
        klass = find_global(module, name)
    except Exception:
        return None
    return None if isinstance(klass, BadClass) else klass
