"""Tests for L{neo.cluster.partition_table} and L{neo.lib.states}."""

import json

from twisted.trial.unittest import SynchronousTestCase

from neo.cluster.partition_table import PartitionTable
from neo.lib.ids import makeNid, p64
from neo.lib.states import CellState

S1, S2, S3 = (makeNid("STORAGE", n) for n in (1, 2, 3))
UP = CellState.UP_TO_DATE
OUT = CellState.OUT_OF_DATE


class ConstructionTests(SynchronousTestCase):
    """A new table is empty and checks its parameters."""

    def test_emptyTable(self):
        """A new table has ptid 0, one empty row per partition."""
        table = PartitionTable(4, 1)
        self.assertEqual(table.ptid, 0)
        self.assertEqual(table.rows, [{}, {}, {}, {}])
        self.assertFalse(table.filled())
        self.assertEqual(table.nids(), set())

    def test_invalidParameters(self):
        """Zero partitions, negative replicas or an empty stripe raise
        ValueError."""
        self.assertRaises(ValueError, PartitionTable, 0)
        self.assertRaises(ValueError, PartitionTable, 4, -1)
        self.assertRaises(ValueError, PartitionTable, 4, 0, 0)
        self.assertRaises(ValueError, PartitionTable.fromJson,
                          {"ptid": 1, "replicas": 0, "stripe": "16",
                           "rows": [[]]})

    def test_partitionOf(self):
        """With stripes of one oid, an oid or tid, packed or not, lives in
        partition id % partitions."""
        table = PartitionTable(12)
        self.assertEqual(table.partitionOf(25), 1)
        self.assertEqual(table.partitionOf(p64(25)), 1)
        self.assertEqual(table.partitionOf(p64(12)), 0)
        self.assertEqual(table.tidPartition(p64(25)), 1)

    def test_stripes(self):
        """Consecutive oids share a partition by stripes, the stripes going
        round the partitions; a transaction's metadata still goes by
        tid % partitions."""
        table = PartitionTable(12, stripe=16)
        self.assertEqual([table.partitionOf(p64(oid)) for oid in
                          (0, 15, 16, 31, 32, 16 * 12 - 1, 16 * 12, 16 * 13)],
                         [0, 0, 1, 1, 2, 11, 0, 1])
        self.assertEqual(table.tidPartition(p64(25)), 1)
        self.assertEqual(table.tidPartition(25), 1)


class MakeTests(SynchronousTestCase):
    """make() builds a table over the given storage nodes."""

    def test_spreadOverTwoNodes(self):
        """Consecutive partitions go to different nodes, one cell each."""
        table = PartitionTable(12)
        table.make([S2, S1])
        self.assertEqual(table.ptid, 1)
        self.assertTrue(table.filled())
        for partition, row in enumerate(table.rows):
            self.assertEqual(list(row.values()), [UP])
            if partition:
                self.assertNotEqual(set(row), set(table.rows[partition - 1]))
        counts = [sum(S in row for row in table.rows) for S in (S1, S2)]
        self.assertEqual(counts, [6, 6])

    def test_oneReplica(self):
        """With replicas=1 each partition has two distinct up-to-date nodes."""
        table = PartitionTable(12, replicas=1)
        table.make([S1, S2, S3])
        for row in table.rows:
            self.assertEqual(len(row), 2)
            self.assertEqual(set(row.values()), {UP})
        self.assertEqual(table.nids(), {S1, S2, S3})

    def test_moreReplicasThanNodes(self):
        """Copies are capped by the number of nodes, never duplicated."""
        table = PartitionTable(3, replicas=4)
        table.make([S1, S2])
        for row in table.rows:
            self.assertEqual(set(row), {S1, S2})

    def test_noNodes(self):
        """A table cannot be made without nodes."""
        table = PartitionTable(3)
        self.assertRaises(ValueError, table.make, [])
        self.assertEqual(table.ptid, 0)

    def test_readableAndWritable(self):
        """readable()/writable() list the nodes of a partition, sorted."""
        table = PartitionTable(2, replicas=1)
        table.make([S1, S2])
        table.rows[0][S2] = OUT
        self.assertEqual(table.readable(0), [S1])
        self.assertEqual(table.writable(0), [S1, S2])
        self.assertEqual(table.readable(1, running={S2}), [S2])
        self.assertEqual(table.writable(0, running={S2}), [S2])
        self.assertEqual(table.readableNids(), {S1, S2})


class OperationalTests(SynchronousTestCase):
    """operational() tells whether every partition can be read."""

    def test_allRunning(self):
        """A made table is operational when all its nodes run."""
        table = PartitionTable(4)
        table.make([S1, S2])
        self.assertTrue(table.operational({S1, S2}))

    def test_missingNodeWithoutReplica(self):
        """Without replicas, losing a node loses partitions."""
        table = PartitionTable(4)
        table.make([S1, S2])
        self.assertFalse(table.operational({S1}))

    def test_missingNodeWithReplica(self):
        """With a replica, one node is enough."""
        table = PartitionTable(4, replicas=1)
        table.make([S1, S2])
        self.assertTrue(table.operational({S2}))
        self.assertFalse(table.operational(set()))

    def test_outOfDateCellIsNotReadable(self):
        """An out-of-date cell does not make its partition operational."""
        table = PartitionTable(1, replicas=1)
        table.make([S1, S2])
        table.rows[0][S1] = OUT
        self.assertFalse(table.operational({S1}))
        self.assertTrue(table.operational({S2}))


class OutdateTests(SynchronousTestCase):
    """outdate() marks the cells of lost nodes out of date."""

    def test_replicaOutdated(self):
        """A lost node's cell is outdated when another readable copy runs."""
        table = PartitionTable(2, replicas=1)
        table.make([S1, S2])
        changes = table.outdate({S1})
        self.assertEqual(sorted(changes), [(0, S2, OUT), (1, S2, OUT)])
        self.assertEqual(table.ptid, 2)
        self.assertEqual(table.rows, [{S1: UP, S2: OUT}, {S1: UP, S2: OUT}])

    def test_lastReadableCopyKept(self):
        """A partition's last readable copy stays up to date."""
        table = PartitionTable(4)
        table.make([S1, S2])
        changes = table.outdate({S1})
        self.assertEqual(changes, [])
        self.assertEqual(table.ptid, 1)
        self.assertEqual({state for row in table.rows
                          for state in row.values()}, {UP})

    def test_mixed(self):
        """Only the partitions with a running readable copy change."""
        table = PartitionTable(3)
        table.make([S1, S2, S3])
        table.rows[0][S2] = UP     # partition 0 on S1 and S2
        changes = table.outdate({S1, S3})
        self.assertEqual(changes, [(0, S2, OUT)])
        self.assertEqual(table.rows[1], {S2: UP})
        self.assertEqual(table.ptid, 2)

    def test_nothingChangesTwice(self):
        """Outdating again with the same running nodes changes nothing."""
        table = PartitionTable(2, replicas=1)
        table.make([S1, S2])
        table.outdate({S1})
        self.assertEqual(table.outdate({S1}), [])
        self.assertEqual(table.ptid, 2)

    def test_allRunningChangesNothing(self):
        """With every node running, nothing is outdated."""
        table = PartitionTable(4, replicas=1)
        table.make([S1, S2])
        self.assertEqual(table.outdate({S1, S2}), [])
        self.assertEqual(table.ptid, 1)


class ApplyTests(SynchronousTestCase):
    """apply() replays the changes the master sent."""

    def test_applyChanges(self):
        """Changes set cell states, ptid and replicas."""
        table = PartitionTable(2)
        table.apply(7, 1, [(0, S1, "UP_TO_DATE"), (1, S2, OUT)])
        self.assertEqual(table.rows, [{S1: UP}, {S2: OUT}])
        self.assertEqual((table.ptid, table.replicas), (7, 1))

    def test_discardedRemovesCell(self):
        """A DISCARDED change removes the cell; an unknown one is ignored."""
        table = PartitionTable(2, replicas=1)
        table.make([S1, S2])
        table.apply(5, 1, [(0, S2, "DISCARDED"), (1, S3, CellState.DISCARDED)])
        self.assertEqual(table.rows, [{S1: UP}, {S1: UP, S2: UP}])
        self.assertEqual(table.ptid, 5)

    def test_badState(self):
        """An unknown state name raises ValueError."""
        table = PartitionTable(1)
        self.assertRaises(ValueError, table.apply, 2, 0, [(0, S1, "BROKEN")])


class SerialisationTests(SynchronousTestCase):
    """toJson/fromJson and format()."""

    def test_jsonRoundTrip(self):
        """A table survives toJson, JSON encoding and fromJson."""
        table = PartitionTable(5, replicas=1)
        table.make([S1, S2, S3])
        table.rows[2][S3] = OUT
        table.rows[4][S1] = CellState.FEEDING
        doc = json.loads(json.dumps(table.toJson()))
        copy = PartitionTable.fromJson(doc)
        self.assertEqual(copy.rows, table.rows)
        self.assertEqual((copy.ptid, copy.replicas, copy.partitions),
                         (table.ptid, table.replicas, table.partitions))

    def test_jsonStripe(self):
        """The stripe is part of the table; a table saved without one (made
        before stripes) keeps every oid in partition oid % partitions."""
        table = PartitionTable(4, stripe=16)
        table.make([S1])
        copy = PartitionTable.fromJson(json.loads(json.dumps(table.toJson())))
        self.assertEqual(copy.stripe, 16)
        self.assertEqual(copy.partitionOf(18), 1)
        doc = table.toJson()
        del doc["stripe"]
        old = PartitionTable.fromJson(doc)
        self.assertEqual(old.stripe, 1)
        self.assertEqual(old.partitionOf(18), 2)

    def test_jsonShape(self):
        """toJson gives ptid, replicas and sorted [nid, state] rows."""
        table = PartitionTable(2)
        table.make([S2, S1])
        self.assertEqual(table.toJson(), {
            "ptid": 1, "replicas": 0, "stripe": 1,
            "rows": [[[S1, "UP_TO_DATE"]], [[S2, "UP_TO_DATE"]]]})

    def test_format(self):
        """format() has a column per node and a letter or '.' per cell."""
        table = PartitionTable(3)
        table.make([S1, S2])
        table.rows[2][S2] = OUT
        lines = table.format().splitlines()
        self.assertEqual(lines[0],
                         "ptid: 1  replicas: 0  partitions: 3  stripe: 1")
        self.assertEqual(lines[1].split(), ["S1", "S2"])
        self.assertEqual([line.split() for line in lines[2:]],
                         [["0", "U", "."], ["1", ".", "U"], ["2", "U", "O"]])
        # Cells line up under their node's column.
        column = lines[1].index("S2") + 1
        self.assertEqual(lines[3][column], "U")
        self.assertEqual(lines[2][column], ".")

    def test_formatEmpty(self):
        """An empty table formats as its header and a line per partition."""
        lines = PartitionTable(2).format().splitlines()
        self.assertEqual(len(lines), 4)
        self.assertEqual(lines[2].split(), ["0"])


class CellStateTests(SynchronousTestCase):
    """Cell states know whether they can be read or written."""

    def test_readableWritable(self):
        """UP_TO_DATE and FEEDING are readable; OUT_OF_DATE only writable."""
        self.assertEqual({s for s in CellState if s.readable},
                         {UP, CellState.FEEDING})
        self.assertEqual({s for s in CellState if s.writable},
                         {UP, CellState.FEEDING, OUT})
        self.assertEqual(CellState.CORRUPTED.letter, "C")
