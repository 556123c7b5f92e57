# -*- test-case-name: tests.unit.test_storage_locks -*-
"""
The storage node's memory of recent records: the latest revision of the
objects it committed or read lately, so that hot loads need no database
round trip.  Bounded in bytes; only the current revision of an object is
kept (with the few it replaced, for conflict resolution), and a commit
replaces it before the object's locks are released.
"""

from collections import OrderedDict

#: Bytes of records kept by default.
DEFAULT_SIZE = 64 * 1024 * 1024
#: Records larger than this are not kept.
LARGEST = 4 * 1024 * 1024
#: Bytes of replaced revisions kept (for conflict resolution).
PREVIOUS_SIZE = 8 * 1024 * 1024
#: Replaced revisions larger than this are not kept.
PREVIOUS_LARGEST = 64 * 1024
#: Replaced revisions kept per object: under contention, a conflicting
#: store is often based on a revision a few commits old.
PREVIOUS_COUNT = 8


class LatestRecords:
    def __init__(self, maxBytes=DEFAULT_SIZE):
        self.maxBytes = maxBytes
        self.size = 0
        # oid -> (tid, compression, data or None for a deletion)
        self._records = OrderedDict()
        #: oid -> the last revisions the current one replaced, newest
        #: first: what a store conflicting with the latest commits was
        #: likely based on.
        self._previous = OrderedDict()
        self._previousSize = 0
        #: Bumped by every commit: a database read that began before a
        #: commit must not be remembered as current.
        self.generation = 0

    def get(self, oid, serial=None, before=None):
        """C{(tid, compression, data)} if the answer is known here."""
        record = self._records.get(oid)
        if record is None:
            return None
        tid = record[0]
        if serial is not None:
            if serial != tid:
                return None
        elif before is not None and not tid < before:
            return None
        self._records.move_to_end(oid)
        return record

    def previous(self, oid, serial):
        """C{(tid, compression, data)} of revision C{serial} if it is one
        of those the current revision replaced, and known here."""
        for record in self._previous.get(oid, ()):
            if record[0] == serial:
                return record
        return None

    def _forgetPrevious(self, oid):
        for record in self._previous.pop(oid, ()):
            self._previousSize -= len(record[2] or b"")

    def _keepPrevious(self, oid, record):
        revisions = self._previous.pop(oid, [])
        revisions.insert(0, record)
        self._previousSize += len(record[2] or b"")
        while len(revisions) > PREVIOUS_COUNT:
            self._previousSize -= len(revisions.pop()[2] or b"")
        self._previous[oid] = revisions
        while self._previousSize > PREVIOUS_SIZE:
            _, dropped = self._previous.popitem(last=False)
            for record in dropped:
                self._previousSize -= len(record[2] or b"")

    def put(self, oid, tid, compression, data):
        old = self._records.pop(oid, None)
        if old is not None:
            self.size -= len(old[2] or b"")
            # Past revisions never change: those kept stay true (a load
            # putting the current revision again keeps them too).
            if old[0] < tid and len(old[2] or b"") <= PREVIOUS_LARGEST:
                self._keepPrevious(oid, old)
        if data is not None and len(data) > LARGEST:
            return
        self._records[oid] = (tid, compression, data)
        self.size += len(data or b"")
        while self.size > self.maxBytes:
            _, (_, _, dropped) = self._records.popitem(last=False)
            self.size -= len(dropped or b"")

    def forget(self, oid):
        old = self._records.pop(oid, None)
        self._forgetPrevious(oid)
        if old is not None:
            self.size -= len(old[2] or b"")

    def clear(self):
        self._records.clear()
        self._previous.clear()
        self.size = self._previousSize = 0
        self.generation += 1
