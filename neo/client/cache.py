# -*- test-case-name: tests.unit.test_client_cache -*-
"""
The client's record cache.

Records are kept with their validity interval: revision C{tid} of an
object is valid until C{next} (the TID of the next revision) or, if C{next}
is None, up to now.  Invalidations close the interval of the current
revision.  The cache is shared by ZODB threads (lookups) and the reactor
thread (fills and invalidations), hence its lock; it evicts the least
recently used objects beyond C{maxBytes}.
"""

import bisect
import threading
from collections import OrderedDict

#: Records larger than this fraction of the cache are not kept.
_LARGEST = 0.5
#: Revisions kept per object at most (the oldest go first): an object
#: modified by every transaction would otherwise pile up its history, and
#: make each store and invalidation of it slower.
MAX_REVISIONS = 8


def _tid(revision):
    return revision[0]


class RecordCache:
    def __init__(self, maxBytes: int):
        self.maxBytes = maxBytes
        self.size = 0
        self._lock = threading.Lock()
        # oid -> list of [tid, next, data], sorted by tid
        self._objects = OrderedDict()
        # oid -> [loads in flight, invalidation TIDs seen meanwhile]
        self._loading = {}
        #: Oids read ahead whose references were not read ahead yet.
        self._unexplored = set()
        self.hits = self.misses = 0

    def __len__(self):
        return len(self._objects)

    def _find(self, oid, match):
        revisions = self._objects.get(oid)
        if revisions is not None:
            for revision in reversed(revisions):
                if match(revision):
                    self._objects.move_to_end(oid)
                    self.hits += 1
                    return revision
        self.misses += 1
        return None

    def loadBefore(self, oid, before):
        """C{(data, tid, next)} of the revision current just before
        C{before}, or None if not cached."""
        # The lookup of every load of a ZODB connection: _find, inlined.
        with self._lock:
            revisions = self._objects.get(oid)
            if revisions is not None:
                for tid, next, data in reversed(revisions):
                    if tid < before and (next is None or before <= next):
                        self._objects.move_to_end(oid)
                        self.hits += 1
                        return data, tid, next
            self.misses += 1
            return None

    def loadSerial(self, oid, serial):
        with self._lock:
            r = self._find(oid, lambda r: r[0] == serial)
            return None if r is None else r[2]

    def load(self, oid):
        """C{(data, tid)} of the current revision, or None."""
        with self._lock:
            r = self._find(oid, lambda r: r[1] is None)
            return None if r is None else (r[2], r[0])

    def missing(self, oids):
        """The oids of which nothing is cached nor being loaded."""
        with self._lock:
            return [oid for oid in oids
                    if oid not in self._objects and oid not in self._loading]

    def beginLoad(self, oid):
        """
        A load of C{oid} is sent to a storage node: invalidations of it are
        recorded until L{endLoad}, since its answer may be older than them.
        """
        with self._lock:
            self._loading.setdefault(oid, [0, []])[0] += 1

    def explore(self, oid) -> bool:
        """Whether C{oid} was read ahead and its references not yet (once)."""
        if oid in self._unexplored:
            with self._lock:
                if oid in self._unexplored:
                    self._unexplored.discard(oid)
                    return True
        return False

    def endLoad(self, oid, tid, next, data=None, readAhead=False):
        """
        The load begun with L{beginLoad} answered revision C{tid}, valid
        until C{next} as the storage node knew it.  Returns the real end
        of validity (an invalidation may have come since), and caches the
        revision if C{data} is given.
        """
        with self._lock:
            entry = self._loading.get(oid)
            if entry is not None:
                entry[0] -= 1
                if not entry[0]:
                    del self._loading[oid]
                if next is None:
                    later = [t for t in entry[1] if t > tid]
                    if later:
                        next = min(later)
            if data is not None:
                self._store(oid, tid, next, data)
                if readAhead:
                    self._unexplored.add(oid)
        return next

    def store(self, oid, tid, next, data):
        with self._lock:
            self._store(oid, tid, next, data)

    def _store(self, oid, tid, next, data):
        # Revisions are sorted by TID; only the last one may be current.
        if len(data) > self.maxBytes * _LARGEST:
            return
        revisions = self._objects.get(oid)
        if revisions is None:
            revisions = self._objects[oid] = []
        i = bisect.bisect_left(revisions, tid, key=_tid)
        if i < len(revisions) and revisions[i][0] == tid:
            r = revisions[i]
            if r[1] is None and next is not None:
                r[1] = next
        elif next is not None or i == len(revisions):
            if i and revisions[i - 1][1] is None:
                # An older revision still thought current is stale: its
                # real end is unknown, so forget it.
                self.size -= len(revisions.pop(i - 1)[2])
                i -= 1
            revisions.insert(i, [tid, next, data])
            self.size += len(data)
            if len(revisions) > MAX_REVISIONS:
                self.size -= len(revisions.pop(0)[2])
        # Else a late answer believed current, older than a revision known
        # here: its real end is unknown, so it is not kept.
        self._objects.move_to_end(oid)
        self._evict()

    def invalidate(self, oids, tid):
        """A transaction C{tid} committed new revisions of C{oids}."""
        with self._lock:
            for oid in oids:
                loading = self._loading.get(oid)
                if loading is not None:
                    loading[1].append(tid)
                revisions = self._objects.get(oid)
                if revisions:
                    r = revisions[-1]
                    if r[1] is None and r[0] < tid:
                        r[1] = tid

    def clear(self):
        with self._lock:
            self._objects.clear()
            self._unexplored.clear()
            self.size = 0

    def clearCurrent(self):
        """Forget every revision believed current (after a reconnection)."""
        with self._lock:
            for oid in list(self._objects):
                revisions = self._objects[oid]
                kept = [r for r in revisions if r[1] is not None]
                self.size -= sum(len(r[2]) for r in revisions if r[1] is None)
                if kept:
                    self._objects[oid] = kept
                else:
                    del self._objects[oid]

    def _evict(self):
        while self.size > self.maxBytes and self._objects:
            _, revisions = self._objects.popitem(last=False)
            self.size -= sum(len(r[2]) for r in revisions)
