# -*- test-case-name: tests.unit.test_storage_locks -*-
"""
The storage node's memory of recent records: the latest revision of the
objects it committed or read lately, so that hot loads need no database
round trip.  Bounded in bytes; only the current revision of an object is
kept, and a commit replaces it before the object's locks are released.
"""

from collections import OrderedDict

#: Bytes of records kept by default.
DEFAULT_SIZE = 64 * 1024 * 1024
#: Records larger than this are not kept.
LARGEST = 1024 * 1024


class LatestRecords:
    def __init__(self, maxBytes=DEFAULT_SIZE):
        self.maxBytes = maxBytes
        self.size = 0
        # oid -> (tid, compression, data or None for a deletion)
        self._records = OrderedDict()
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

    def put(self, oid, tid, compression, data):
        old = self._records.pop(oid, None)
        if old is not None:
            self.size -= len(old[2] or b"")
        if data is not None and len(data) > LARGEST:
            return
        self._records[oid] = (tid, compression, data)
        self.size += len(data or b"")
        while self.size > self.maxBytes:
            _, (_, _, dropped) = self._records.popitem(last=False)
            self.size -= len(dropped or b"")

    def forget(self, oid):
        old = self._records.pop(oid, None)
        if old is not None:
            self.size -= len(old[2] or b"")

    def clear(self):
        self._records.clear()
        self.size = 0
        self.generation += 1
