"""Tests for L{neo.lib.ids}."""


from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from neo.lib.ids import (
    MAX_TID, TidAllocator, ZERO_TID, formatNid, formatTid, makeNid, nidType,
    p64, parseNid, tidFromTime, timeFromTid, u64)

#: 2024-01-02 03:04:05.678 UTC, a time with a fractional part.
SOME_TIME = 1704164645.678


class PackTests(SynchronousTestCase):
    """p64 and u64 convert between integers and 8-byte ids."""

    def test_p64IsBigEndianEightBytes(self):
        """p64 packs an integer into 8 big-endian bytes."""
        self.assertEqual(p64(1), b"\0" * 7 + b"\1")
        self.assertEqual(p64(0x0102030405060708), b"\1\2\3\4\5\6\7\x08")
        self.assertEqual(p64(0), ZERO_TID)

    def test_roundTrip(self):
        """u64 is the inverse of p64 over the whole 64-bit range."""
        for n in (0, 1, 255, 256, 2 ** 32, 2 ** 63 - 1, 2 ** 64 - 1):
            self.assertEqual(u64(p64(n)), n)
        self.assertEqual(u64(MAX_TID), 2 ** 63 - 1)

    def test_orderIsPreserved(self):
        """Packed ids compare as bytes like the integers they encode."""
        values = [0, 1, 255, 256, 65535, 2 ** 40, 2 ** 63]
        self.assertEqual(sorted(p64(v) for v in reversed(values)),
                         [p64(v) for v in values])

    def test_outOfRangeRaises(self):
        """Negative or too large integers cannot be packed."""
        self.assertRaises(Exception, p64, -1)
        self.assertRaises(Exception, p64, 2 ** 64)


class TidTimeTests(SynchronousTestCase):
    """TIDs are ZODB time stamps."""

    def test_roundTripWithinAMillisecond(self):
        """timeFromTid(tidFromTime(t)) is within a millisecond of t."""
        for t in (SOME_TIME, 0.0, 1.5, 2_000_000_000.999):
            self.assertAlmostEqual(timeFromTid(tidFromTime(t)), t, delta=1e-3)

    def test_increasingWithTime(self):
        """A later time gives a greater TID, even a millisecond later."""
        self.assertLess(tidFromTime(SOME_TIME), tidFromTime(SOME_TIME + 0.001))
        self.assertLess(tidFromTime(SOME_TIME), tidFromTime(SOME_TIME + 86400))

    def test_formatTid(self):
        """formatTid shows the hexadecimal TID and its UTC date."""
        tid = tidFromTime(SOME_TIME)
        text = formatTid(tid)
        self.assertEqual(text, f"0x{tid:016x} (2024-01-02 03:04:05 UTC)")
        self.assertEqual(formatTid(p64(tid)), text)
        self.assertEqual(formatTid(None), "none")


class TidAllocatorTests(SynchronousTestCase):
    """TidAllocator hands out strictly increasing, time-based TIDs."""

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(SOME_TIME)

    def test_followsTheClock(self):
        """The first TID is the TID of the clock's current time."""
        allocator = TidAllocator(self.clock)
        tid = allocator.next()
        self.assertEqual(tid, tidFromTime(SOME_TIME))
        self.assertEqual(allocator.last, tid)

    def test_clockStandingStill(self):
        """With the clock standing still, each TID is one more than the last."""
        allocator = TidAllocator(self.clock)
        tids = [allocator.next() for _ in range(5)]
        self.assertEqual(tids, list(range(tids[0], tids[0] + 5)))

    def test_clockGoingBackwards(self):
        """A clock going backwards never makes a TID lower than the last."""
        allocator = TidAllocator(self.clock)
        first = allocator.next()
        self.clock.rightNow -= 3600
        second = allocator.next()
        self.assertGreater(second, first)
        self.assertEqual(second, first + 1)

    def test_clockGoingForward(self):
        """When the clock moves on, TIDs jump to the new time."""
        allocator = TidAllocator(self.clock)
        allocator.next()
        self.clock.advance(10)
        self.assertEqual(allocator.next(), tidFromTime(SOME_TIME + 10))

    def test_initialLast(self):
        """A TID greater than the clock's is continued from, not repeated."""
        future = tidFromTime(SOME_TIME + 3600)
        allocator = TidAllocator(self.clock, last=future)
        self.assertEqual(allocator.next(), future + 1)

    def test_observe(self):
        """observe() raises the floor of later TIDs, and never lowers it."""
        allocator = TidAllocator(self.clock)
        future = tidFromTime(SOME_TIME + 3600)
        allocator.observe(future)
        self.assertEqual(allocator.last, future)
        allocator.observe(future - 100)
        self.assertEqual(allocator.last, future)
        self.assertEqual(allocator.next(), future + 1)

    def test_observeOlderTidChangesNothing(self):
        """Observing a TID older than the clock leaves TIDs time-based."""
        allocator = TidAllocator(self.clock)
        allocator.observe(tidFromTime(SOME_TIME - 3600))
        self.assertEqual(allocator.next(), tidFromTime(SOME_TIME))

    def test_partitionRemainder(self):
        """With partitions, each TID has the remainder asked and increases."""
        allocator = TidAllocator(self.clock)
        last = allocator.last
        for remainder in (0, 11, 5, 5, 3, 7, 0, 11):
            tid = allocator.next(12, remainder)
            self.assertEqual(tid % 12, remainder)
            self.assertGreater(tid, last)
            self.assertEqual(allocator.last, tid)
            last = tid

    def test_partitionRemainderWithClockBackwards(self):
        """The remainder holds and TIDs increase while the clock goes back."""
        allocator = TidAllocator(self.clock)
        last = allocator.next()
        for remainder in (3, 3, 1, 2):
            self.clock.rightNow -= 60
            tid = allocator.next(7, remainder)
            self.assertEqual(tid % 7, remainder)
            self.assertGreater(tid, last)
            # The smallest such TID: no more than a full cycle later.
            self.assertLessEqual(tid, last + 7)
            last = tid


class NidTests(SynchronousTestCase):
    """Node ids: one namespace per node type."""

    def test_storageIdsArePositive(self):
        """Storage node ids are their number."""
        self.assertEqual(makeNid("STORAGE", 1), 1)
        self.assertEqual(makeNid("STORAGE", 42), 42)

    def test_otherRolesAreNegative(self):
        """Masters, clients and admins have negative, distinct ids."""
        nids = [makeNid(t, 1) for t in ("MASTER", "CLIENT", "ADMIN")]
        self.assertTrue(all(n < 0 for n in nids))
        self.assertEqual(len(set(nids)), 3)

    def test_nidType(self):
        """nidType gives back the type a node id was made for."""
        for nodeType in ("STORAGE", "MASTER", "CLIENT", "ADMIN"):
            for number in (1, 2, 1000, 0xFFFFFF):
                self.assertEqual(nidType(makeNid(nodeType, number)), nodeType)

    def test_nidTypeInvalid(self):
        """A node id outside every namespace raises ValueError."""
        self.assertRaises(ValueError, nidType, -0x40 << 24)
        self.assertRaises(ValueError, nidType, 1 << 24)

    def test_formatNid(self):
        """formatNid writes a letter and the node's number."""
        self.assertEqual(formatNid(makeNid("STORAGE", 1)), "S1")
        self.assertEqual(formatNid(makeNid("CLIENT", 3)), "C3")
        self.assertEqual(formatNid(makeNid("ADMIN", 1)), "A1")
        self.assertEqual(formatNid(makeNid("MASTER", 1)), "M1")
        self.assertEqual(formatNid(None), "-")

    def test_parseNid(self):
        """parseNid reads what formatNid writes, in either case."""
        for text in ("S1", "C3", "A1", "M1", "S12345"):
            nid = parseNid(text)
            self.assertEqual(formatNid(nid), text)
        self.assertEqual(parseNid("c3"), makeNid("CLIENT", 3))
        self.assertEqual(parseNid(" M1 "), makeNid("MASTER", 1))

    def test_parseNidNumeric(self):
        """parseNid also accepts a raw, valid integer node id."""
        master = makeNid("MASTER", 2)
        self.assertEqual(parseNid(str(master)), master)
        self.assertEqual(parseNid("7"), 7)

    def test_parseNidInvalid(self):
        """Malformed node ids raise ValueError."""
        for text in ("", "X1", "S", "1S", "S1x", "S-1", "M 1", "abc",
                     str(-0x40 << 24)):
            self.assertRaises(ValueError, parseNid, text)

    def test_parseNidNumberOutOfRange(self):
        """A node number that does not fit in 24 bits raises ValueError."""
        for text in ("S16777216", "M16777216", "C268435457"):
            self.assertRaises(ValueError, parseNid, text)
