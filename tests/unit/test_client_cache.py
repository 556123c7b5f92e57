"""Tests for L{neo.client.cache}."""

from twisted.trial.unittest import SynchronousTestCase

from neo.client.cache import MAX_REVISIONS, RecordCache
from neo.lib.ids import p64

A, B, C = p64(0xA), p64(0xB), p64(0xC)
T1, T2, T3, T4 = (p64(n) for n in (10, 20, 30, 40))


class CacheTestCase(SynchronousTestCase):
    def setUp(self):
        self.cache = RecordCache(1000)

    def assertSizeConsistent(self):
        """The size counter is the total length of the records kept."""
        kept = sum(len(r[2]) for revisions in self.cache._objects.values()
                   for r in revisions)
        self.assertEqual(self.cache.size, kept)
        self.assertLessEqual(self.cache.size, self.cache.maxBytes)


class LoadBeforeTests(CacheTestCase):
    """loadBefore finds the revision valid just before a TID."""

    def setUp(self):
        super().setUp()
        self.cache.store(A, T1, T2, b"one")
        self.cache.store(A, T2, None, b"two")

    def test_closedInterval(self):
        """A revision matches when tid < before <= next."""
        self.assertEqual(self.cache.loadBefore(A, p64(11)), (b"one", T1, T2))
        self.assertEqual(self.cache.loadBefore(A, T2), (b"one", T1, T2))

    def test_beforeEqualToTid(self):
        """A revision does not match a before equal to its own tid."""
        self.assertIsNone(self.cache.loadBefore(A, T1))
        self.assertIsNone(self.cache.loadBefore(A, p64(5)))

    def test_current(self):
        """A current revision (next None) matches any later before."""
        self.assertEqual(self.cache.loadBefore(A, p64(21)), (b"two", T2, None))
        self.assertEqual(self.cache.loadBefore(A, p64(2 ** 63)),
                         (b"two", T2, None))

    def test_unknownOid(self):
        """An oid never stored is a miss."""
        self.assertIsNone(self.cache.loadBefore(B, T3))

    def test_gap(self):
        """Between two cached revisions that are not consecutive, a miss."""
        self.cache.store(B, T1, T2, b"b1")
        self.cache.store(B, T3, T4, b"b3")
        self.assertIsNone(self.cache.loadBefore(B, p64(25)))
        self.assertEqual(self.cache.loadBefore(B, p64(35)), (b"b3", T3, T4))
        self.assertIsNone(self.cache.loadBefore(B, p64(41)))

    def test_hitsAndMisses(self):
        """Lookups are counted as hits or misses."""
        self.cache.loadBefore(A, T2)
        self.cache.loadBefore(A, T1)
        self.cache.load(B)
        self.assertEqual((self.cache.hits, self.cache.misses), (1, 2))


class LoadTests(CacheTestCase):
    """load and loadSerial."""

    def test_loadCurrent(self):
        """load() answers the current revision and its tid."""
        self.cache.store(A, T1, T2, b"one")
        self.assertIsNone(self.cache.load(A))
        self.cache.store(A, T2, None, b"two")
        self.assertEqual(self.cache.load(A), (b"two", T2))

    def test_loadSerial(self):
        """loadSerial() answers exactly the revision asked, current or not."""
        self.cache.store(A, T1, T2, b"one")
        self.cache.store(A, T2, None, b"two")
        self.assertEqual(self.cache.loadSerial(A, T1), b"one")
        self.assertEqual(self.cache.loadSerial(A, T2), b"two")
        self.assertIsNone(self.cache.loadSerial(A, T3))
        self.assertIsNone(self.cache.loadSerial(B, T1))

    def test_storeSameRevisionTwice(self):
        """Storing a revision again keeps one copy and counts it once."""
        self.cache.store(A, T1, None, b"one")
        self.cache.store(A, T1, None, b"one")
        self.assertEqual(self.cache.size, 3)
        self.assertEqual(len(self.cache._objects[A]), 1)

    def test_storeCloses(self):
        """Storing a known current revision with its next closes it."""
        self.cache.store(A, T1, None, b"one")
        self.cache.store(A, T1, T3, b"one")
        self.assertIsNone(self.cache.load(A))
        self.assertEqual(self.cache.loadBefore(A, T2), (b"one", T1, T3))
        self.assertEqual(self.cache.size, 3)

    def test_lateCurrentDoesNotReopen(self):
        """A revision known to be closed is not reopened by a late store
        that still believes it current."""
        self.cache.store(A, T1, T2, b"one")
        self.cache.store(A, T1, None, b"one")
        self.assertIsNone(self.cache.load(A))
        self.assertEqual(self.cache.loadBefore(A, T2), (b"one", T1, T2))


class InvalidateTests(CacheTestCase):
    """Invalidations close the interval of current revisions."""

    def test_invalidateClosesCurrent(self):
        """After invalidate, the old revision ends at the new TID."""
        self.cache.store(A, T1, None, b"one")
        self.cache.store(B, T1, None, b"bee")
        self.cache.invalidate([A, C], T2)
        self.assertIsNone(self.cache.load(A))
        self.assertEqual(self.cache.loadBefore(A, T2), (b"one", T1, T2))
        self.assertIsNone(self.cache.loadBefore(A, T3))
        self.assertEqual(self.cache.load(B), (b"bee", T1))
        self.assertEqual(len(self.cache), 2)

    def test_invalidateKeepsClosedRevisions(self):
        """An invalidation leaves the end of closed revisions alone."""
        self.cache.store(A, T1, T2, b"one")
        self.cache.store(A, T2, None, b"two")
        self.cache.invalidate([A], T3)
        self.assertEqual(self.cache.loadBefore(A, T2), (b"one", T1, T2))
        self.assertEqual(self.cache.loadBefore(A, T3), (b"two", T2, T3))

    def test_lateOlderCurrentNotKept(self):
        """A late answer believing current a revision older than one known
        here is not kept: its real end is unknown."""
        self.cache.store(A, T3, None, b"three")
        self.cache.store(A, T1, None, b"one")
        self.assertIsNone(self.cache.loadSerial(A, T1))
        self.assertIsNone(self.cache.loadBefore(A, T2))
        self.assertEqual(self.cache.load(A), (b"three", T3))
        self.cache.invalidate([A], T4)
        self.assertEqual(self.cache.loadBefore(A, T4), (b"three", T3, T4))
        self.assertSizeConsistent()

    def test_closedRevisionAfterStaleCurrent(self):
        """A closed revision newer than the one thought current drops it:
        the end of that one is unknown."""
        self.cache.store(A, T1, None, b"one")
        self.cache.store(A, T3, T4, b"three")
        self.assertIsNone(self.cache.loadSerial(A, T1))
        self.assertIsNone(self.cache.load(A))
        self.assertEqual(self.cache.loadBefore(A, T4), (b"three", T3, T4))
        self.assertSizeConsistent()

    def test_revisionsPerObjectBounded(self):
        """An object modified again and again keeps its latest
        MAX_REVISIONS revisions only, the current one among them."""
        cache = self.cache = RecordCache(100000)
        for n in range(1, 50):
            cache.invalidate([A], p64(n))
            cache.store(A, p64(n), None, b"%d" % n)
        self.assertEqual(len(cache._objects[A]), MAX_REVISIONS)
        self.assertEqual(cache.load(A), (b"49", p64(49)))
        first = 50 - MAX_REVISIONS
        self.assertEqual(cache.loadSerial(A, p64(first)), b"%d" % first)
        self.assertIsNone(cache.loadSerial(A, p64(first - 1)))
        self.assertEqual(cache.loadBefore(A, p64(45)),
                         (b"44", p64(44), p64(45)))
        self.assertSizeConsistent()

    def test_invalidateOlderTidIgnored(self):
        """An invalidation not after the current revision changes nothing."""
        self.cache.store(A, T2, None, b"two")
        self.cache.invalidate([A], T2)
        self.cache.invalidate([A], T1)
        self.assertEqual(self.cache.load(A), (b"two", T2))

    def test_invalidateThenStoreNew(self):
        """After commit: invalidate, then the new current revision."""
        self.cache.store(A, T1, None, b"one")
        self.cache.invalidate([A], T2)
        self.cache.store(A, T2, None, b"two")
        self.assertEqual(self.cache.load(A), (b"two", T2))
        self.assertEqual(self.cache.loadSerial(A, T1), b"one")
        self.assertEqual(self.cache.size, 6)

    def test_newCurrentDropsOlderCurrent(self):
        """Storing a new current revision drops an older one still thought
        current, whose real end is unknown."""
        self.cache.store(A, T1, None, b"one")
        self.cache.store(A, T3, None, b"three")
        self.assertEqual(self.cache.load(A), (b"three", T3))
        self.assertIsNone(self.cache.loadSerial(A, T1))
        self.assertIsNone(self.cache.loadBefore(A, T2))
        self.assertEqual(self.cache.size, 5)
        self.assertSizeConsistent()

    def test_newCurrentKeepsClosedRevisions(self):
        """Closed revisions stay when a new current revision is stored."""
        self.cache.store(A, T1, T2, b"one")
        self.cache.store(A, T3, None, b"three")
        self.assertEqual(self.cache.loadSerial(A, T1), b"one")
        self.assertSizeConsistent()


class EvictionTests(CacheTestCase):
    """The cache stays within maxBytes, evicting least recently used."""

    def test_lruEviction(self):
        """Beyond maxBytes, the least recently used object goes first."""
        self.cache.store(A, T1, None, b"a" * 400)
        self.cache.store(B, T1, None, b"b" * 400)
        self.cache.load(A)               # B is now the least recently used.
        self.cache.store(C, T1, None, b"c" * 400)
        self.assertIsNone(self.cache.load(B))
        self.assertEqual(self.cache.load(A), (b"a" * 400, T1))
        self.assertEqual(self.cache.load(C), (b"c" * 400, T1))
        self.assertEqual(self.cache.size, 800)
        self.assertSizeConsistent()

    def test_evictsWholeObjects(self):
        """Every revision of an evicted object goes, and is uncounted."""
        self.cache.store(A, T1, T2, b"a" * 300)
        self.cache.store(A, T2, None, b"a" * 300)
        self.cache.store(B, T1, None, b"b" * 300)
        self.cache.store(C, T1, None, b"c" * 300)
        self.assertEqual(len(self.cache), 2)
        self.assertIsNone(self.cache.loadSerial(A, T1))
        self.assertEqual(self.cache.size, 600)
        self.assertSizeConsistent()

    def test_manyStores(self):
        """After many stores and invalidations the size stays right."""
        for n in range(200):
            oid = p64(n % 17)
            self.cache.invalidate([oid], p64(n + 1))
            self.cache.store(oid, p64(n + 1), None, b"x" * (n % 90))
        self.assertSizeConsistent()
        self.assertGreater(len(self.cache), 1)

    def test_largeRecordNotKept(self):
        """A record larger than half the cache is not kept."""
        self.cache.store(A, T1, None, b"a" * 501)
        self.assertIsNone(self.cache.load(A))
        self.assertEqual((self.cache.size, len(self.cache)), (0, 0))
        self.cache.store(A, T1, None, b"a" * 500)
        self.assertEqual(self.cache.load(A), (b"a" * 500, T1))

    def test_clear(self):
        """clear() empties the cache."""
        self.cache.store(A, T1, None, b"one")
        self.cache.clear()
        self.assertEqual((self.cache.size, len(self.cache)), (0, 0))
        self.assertIsNone(self.cache.load(A))

    def test_clearCurrent(self):
        """clearCurrent() forgets current revisions and keeps closed ones."""
        self.cache.store(A, T1, T2, b"one")
        self.cache.store(A, T2, None, b"two")
        self.cache.store(B, T1, None, b"bee")
        self.cache.clearCurrent()
        self.assertIsNone(self.cache.load(A))
        self.assertIsNone(self.cache.loadSerial(A, T2))
        self.assertEqual(self.cache.loadSerial(A, T1), b"one")
        self.assertIsNone(self.cache.load(B))
        self.assertEqual(len(self.cache), 1)
        self.assertEqual(self.cache.size, 3)
        self.assertSizeConsistent()


OID = A


class LoadInFlightTests(CacheTestCase):
    """Invalidations racing with a load sent to a storage node."""

    def test_invalidationDuringLoad(self):
        """
        An invalidation processed between the start of a load and the
        caching of its answer ends the answered revision: it is not cached
        as current.
        """
        cache = RecordCache(1000)
        cache.beginLoad(OID)
        cache.invalidate([OID], p64(20))
        self.assertEqual(cache.endLoad(OID, p64(10), None, b"old"), p64(20))
        self.assertIsNone(cache.load(OID))
        self.assertEqual(cache.loadBefore(OID, p64(20)),
                         (b"old", p64(10), p64(20)))
        self.assertIsNone(cache.loadBefore(OID, p64(21)))

    def test_olderInvalidationIgnored(self):
        """Invalidations not after the answered revision change nothing."""
        cache = RecordCache(1000)
        cache.beginLoad(OID)
        cache.invalidate([OID], p64(10))
        self.assertIsNone(cache.endLoad(OID, p64(10), None, b"cur"))
        self.assertEqual(cache.load(OID), (b"cur", p64(10)))

    def test_concurrentLoads(self):
        """Two loads of one oid in flight share what they saw, and the
        bookkeeping is gone once both ended."""
        cache = RecordCache(1000)
        cache.beginLoad(OID)
        cache.beginLoad(OID)
        cache.invalidate([OID], p64(30))
        self.assertEqual(cache.endLoad(OID, p64(10), None), p64(30))
        self.assertEqual(cache.endLoad(OID, p64(10), None), p64(30))
        self.assertEqual(cache._loading, {})
        cache.invalidate([OID], p64(40))
        self.assertEqual(cache._loading, {})

    def test_knownNextKept(self):
        """A revision the storage node already knew the end of keeps it."""
        cache = RecordCache(1000)
        cache.beginLoad(OID)
        cache.invalidate([OID], p64(50))
        self.assertEqual(cache.endLoad(OID, p64(10), p64(20), b"x"), p64(20))


class ReadAheadTests(CacheTestCase):
    """Records read ahead, and the bookkeeping that chains read-ahead."""

    def test_missing(self):
        """missing() leaves out what is cached or being loaded."""
        cache = RecordCache(1000)
        cache.store(A, T1, None, b"a")
        cache.beginLoad(B)
        self.assertEqual(cache.missing([A, B, C]), [C])

    def test_exploreOnce(self):
        """A record read ahead is explored once; a normal one never."""
        cache = RecordCache(1000)
        cache.beginLoad(A)
        cache.endLoad(A, T1, None, b"a", readAhead=True)
        cache.beginLoad(B)
        cache.endLoad(B, T1, None, b"b")
        self.assertTrue(cache.explore(A))
        self.assertFalse(cache.explore(A))
        self.assertFalse(cache.explore(B))

    def test_readAheadRespectsInvalidations(self):
        """A revision read ahead while its object was invalidated is not
        cached as current."""
        cache = RecordCache(1000)
        cache.beginLoad(A)
        cache.invalidate([A], T2)
        cache.endLoad(A, T1, None, b"old", readAhead=True)
        self.assertIsNone(cache.load(A))
        self.assertEqual(cache.loadBefore(A, T2), (b"old", T1, T2))
