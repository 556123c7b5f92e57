"""The interface every storage backend provides."""

from zope.interface import Attribute, Interface


class IStorageBackend(Interface):
    """
    The database of one storage node.  Every method returns a Deferred and
    runs its SQL off the reactor thread, in submission order.

    OIDs and TIDs are integers here; records are bytes.
    """

    config = Attribute("dict of the persistent settings, loaded at open()")

    def open():
        """Create or check the schema and load C{config}."""

    def close():
        """Close the connections."""

    def reset():
        """Erase everything this node stored."""

    def setConfig(name, value):
        """Persist one setting (None deletes it)."""

    def lastSerial(partition, oid):
        """The last committed TID of an object, or None."""

    def load(partition, oid, serial, before, maxSize=None):
        """
        C{(serial, nextSerial, compression, data, deleted)}; C{data} is
        None (not even read) if larger than C{maxSize}.
        """

    def loadLatest(objects, maxSize=None):
        """
        For each C{(partition, oid)} of C{objects}, what L{load} answers
        of its current revision, or None if it does not exist; in one
        database call.
        """

    def vote(ttid, partition, metadata, objects):
        """Make a transaction's stores durable in the temporary tables."""

    def commitVoted(ttid, tid, partition, metadata, objects):
        """
        Commit a transaction voted in memory (never written) under its
        final TID, in one SQL transaction: it has no other participant.
        """

    def voteAndLock(ttid, tid, partition, metadata, objects,
                    participants=None):
        """
        L{vote} and L{lockTransaction} in one SQL transaction.  With
        C{participants} (nids), the other participants may not have
        written the transaction yet: verification checks (L{knows}).
        """

    def lockTransaction(ttid, tid):
        """
        Record the final TID of a voted transaction (durably), and write it
        to the permanent tables; it stays marked as locked until
        L{unlockTransaction} or L{forgetLater}.
        """

    def unlockTransaction(ttid):
        """Finish moving a locked transaction to the permanent tables, and
        drop its mark."""

    def forgetLater(ttid):
        """Drop the mark of a transaction locked here once convenient
        (with the next commit step): the master unlocked it."""

    def commitTransaction(ttid, tid):
        """Lock and unlock at once, in one SQL transaction."""

    def abortTransaction(ttid):
        """Drop the temporary data of a transaction."""

    def lockedTransactions():
        """C{[(ttid, tid or None, participants or None)]} of the voted
        transactions."""

    def knows(tid, partitions):
        """Whether a transaction is locked or committed here, in one of
        C{partitions}."""

    def undoTransaction(ttid, tid, partitions):
        """Drop a transaction locked by L{voteAndLock} (with
        C{participants}) that another participant never wrote."""

    def finishRecovery():
        """Commit the locked transactions, drop the others."""

    def lastIds():
        """C{(lastTid, lastOid)}, None where nothing is stored."""
