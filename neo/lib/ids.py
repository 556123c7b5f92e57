# -*- test-case-name: tests.unit.test_ids -*-
"""
Object ids, transaction ids and node ids.

OIDs and TIDs are 8-byte big-endian strings, as in ZODB.  TIDs are ZODB
time stamps: strictly increasing, and close to the wall clock.
"""

import struct
import time

from ZODB.TimeStamp import TimeStamp

ZERO_TID = b"\0" * 8
ZERO_OID = b"\0" * 8
#: The greatest TID that fits in a signed 64-bit SQL integer.
MAX_TID = b"\x7f" + b"\xff" * 7

_q = struct.Struct(">Q")


def p64(n: int) -> bytes:
    """Pack an integer into an 8-byte id."""
    return _q.pack(n)


def u64(b: bytes) -> int:
    """Unpack an 8-byte id into an integer."""
    return _q.unpack(b)[0]


def tidFromTime(seconds: float) -> int:
    """
    The TID, as an integer, of a wall-clock time in seconds since the epoch.
    """
    gm = time.gmtime(seconds)
    stamp = TimeStamp(*(gm[:5] + (gm.tm_sec + seconds % 1,)))
    return u64(stamp.raw())


def timeFromTid(tid: int) -> float:
    """The wall-clock time, in seconds since the epoch, of a TID."""
    return TimeStamp(p64(tid)).timeTime()


def formatTid(tid) -> str:
    """A TID as an operator reads it: hexadecimal and UTC date."""
    if tid is None:
        return "none"
    if isinstance(tid, bytes):
        tid = u64(tid)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(timeFromTid(tid)))
    return f"0x{tid:016x} ({stamp} UTC)"


class TidAllocator:
    """
    Hands out strictly increasing, time-based TIDs.

    @ivar last: the greatest TID handed out or known to be committed.
    """

    def __init__(self, clock, last: int = 0):
        self._clock = clock
        self.last = last

    def observe(self, tid: int) -> None:
        """Never hand out a TID lower than or equal to C{tid}."""
        if tid > self.last:
            self.last = tid

    def next(self, partitions: int = 0, remainder: int = 0) -> int:
        """
        A new TID, greater than every earlier one.

        @param partitions: when not zero, the TID returned is congruent to
            C{remainder} modulo C{partitions}, so that a transaction's
            metadata stays in the partition chosen by its temporary TID.
        """
        tid = max(tidFromTime(self._clock.seconds()), self.last + 1)
        if partitions:
            tid += (remainder - tid) % partitions
        self.last = tid
        return tid


# Node ids: the master allocates them.  Storage ids are positive and kept
# forever in the storage's database; other roles get an id per session in
# their own negative namespace.
_NAMESPACES = {"STORAGE": 0, "MASTER": -0x10, "CLIENT": -0x20, "ADMIN": -0x30}
_LETTERS = {"STORAGE": "S", "MASTER": "M", "CLIENT": "C", "ADMIN": "A"}


def makeNid(nodeType: str, number: int) -> int:
    """The node id of the C{number}th node of a type (C{number} >= 1)."""
    if not 0 <= number <= 0xFFFFFF:
        raise ValueError(f"node number {number} out of range")
    return (_NAMESPACES[nodeType] << 24) + number


def nidType(nid: int) -> str:
    """The node type a node id belongs to."""
    namespace = nid >> 24
    for nodeType, value in _NAMESPACES.items():
        if value == namespace:
            return nodeType
    raise ValueError(f"invalid node id {nid}")


def formatNid(nid) -> str:
    """A node id as an operator reads it: C{S1}, C{M1}, C{C3}, C{A1}."""
    if nid is None:
        return "-"
    return _LETTERS[nidType(nid)] + str(nid & 0xFFFFFF)


def parseNid(text: str) -> int:
    """The inverse of L{formatNid}; raises C{ValueError} on bad input."""
    text = text.strip()
    for nodeType, letter in _LETTERS.items():
        if text[:1].upper() == letter and text[1:].isdigit():
            return makeNid(nodeType, int(text[1:]))
    if text.lstrip("-").isdigit():
        nid = int(text)
        nidType(nid)
        return nid
    raise ValueError(f"invalid node id {text!r}")
