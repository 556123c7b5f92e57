# -*- test-case-name: tests.unit.test_partition_table -*-
"""
The partition table: which storage nodes hold which partitions.

Objects go to partitions by stripes of consecutive oids: an object lives in
partition C{oid // stripe % partitions}, so that objects created together
(which get consecutive oids) are in one partition, and a commit that writes
them together involves one storage node; a transaction's metadata lives in
partition C{tid % partitions}.  Each partition has cells, one per storage
node holding a copy, each with a L{CellState}.  This module is sans-IO: the
master changes a table and sends the changes it returns.
"""

from neo.lib.ids import formatNid, u64
from neo.lib.states import CellState


class PartitionTable:
    """
    @ivar ptid: the version of the table, +1 on every change; 0 if empty.
    @ivar replicas: copies wanted beyond the first.
    @ivar stripe: consecutive oids in one partition (fixed when the table is
        first made: it decides where every object is).
    @ivar rows: one C{{nid: CellState}} per partition.
    """

    #: The stripe of a new cluster's table: big enough for the objects
    #: created by one commit (an object and those it holds) to be together
    #: most of the time, small enough for a batch of new objects to be
    #: spread over every node.
    STRIPE = 16

    def __init__(self, partitions: int, replicas: int = 0, stripe: int = 1):
        if partitions < 1:
            raise ValueError("a cluster needs at least one partition")
        if replicas < 0:
            raise ValueError("the number of replicas cannot be negative")
        if type(stripe) is not int or stripe < 1:
            raise ValueError(f"invalid stripe {stripe!r}: a stripe holds a"
                             " whole number of oids, at least one")
        self.partitions = partitions
        self.stripe = stripe
        self.replicas = replicas
        self.ptid = 0
        self.rows = [{} for _ in range(partitions)]

    # -- Queries ----------------------------------------------------------

    def partitionOf(self, oid) -> int:
        """The partition of an object."""
        if isinstance(oid, bytes):
            oid = u64(oid)
        return oid // self.stripe % self.partitions

    def tidPartition(self, tid) -> int:
        """The partition of a transaction's metadata (by default)."""
        if isinstance(tid, bytes):
            tid = u64(tid)
        return tid % self.partitions

    def filled(self) -> bool:
        """Every partition has at least one cell."""
        return all(self.rows)

    def nids(self) -> set:
        """The storage nodes having at least one cell."""
        return {nid for row in self.rows for nid in row}

    def readableNids(self) -> set:
        """The storage nodes having at least one readable cell."""
        return {nid for row in self.rows
                for nid, state in row.items() if state.readable}

    def operational(self, running) -> bool:
        """Every partition has a readable cell on a node of C{running}."""
        return all(any(state.readable and nid in running
                       for nid, state in row.items())
                   for row in self.rows)

    def readable(self, partition: int, running=None) -> list:
        """The nodes that may answer reads of a partition."""
        return [nid for nid, state in sorted(self.rows[partition].items())
                if state.readable and (running is None or nid in running)]

    def writable(self, partition: int, running=None) -> list:
        """The nodes that must receive writes of a partition."""
        return [nid for nid, state in sorted(self.rows[partition].items())
                if state.writable and (running is None or nid in running)]

    # -- Changes ----------------------------------------------------------

    def make(self, nids) -> None:
        """
        Build a new table over C{nids}, every cell up to date.

        Consecutive partitions go to different nodes (new oids are roughly
        sequential, so that the stripes of a batch of new objects spread
        over all nodes), and the copies of a partition are on distinct
        nodes.
        """
        nids = sorted(nids)
        if not nids:
            raise ValueError("a partition table needs at least one node")
        copies = min(self.replicas + 1, len(nids))
        self.rows = [
            {nids[(p + k) % len(nids)]: CellState.UP_TO_DATE
             for k in range(copies)}
            for p in range(self.partitions)]
        self.ptid += 1

    def outdate(self, running) -> list:
        """
        Mark the readable cells of nodes not in C{running} OUT_OF_DATE,
        except a partition's last readable copy (kept so that the cluster
        can restart from it).  Returns the changes; ptid is bumped if any.
        """
        changes = []
        for partition, row in enumerate(self.rows):
            alive = [nid for nid, state in row.items()
                     if state.readable and nid in running]
            if not alive:
                continue
            for nid, state in sorted(row.items()):
                if state.readable and nid not in running:
                    row[nid] = CellState.OUT_OF_DATE
                    changes.append((partition, nid, CellState.OUT_OF_DATE))
        if changes:
            self.ptid += 1
        return changes

    def apply(self, ptid: int, replicas: int, changes) -> None:
        """Apply changes received from the master."""
        for partition, nid, state in changes:
            state = CellState(state)
            if state is CellState.DISCARDED:
                self.rows[partition].pop(nid, None)
            else:
                self.rows[partition][nid] = state
        self.ptid = ptid
        self.replicas = replicas

    # -- Serialisation ----------------------------------------------------

    def toJson(self) -> dict:
        return {
            "ptid": self.ptid,
            "replicas": self.replicas,
            "stripe": self.stripe,
            "rows": [[[nid, state.value] for nid, state in sorted(row.items())]
                     for row in self.rows],
        }

    @classmethod
    def fromJson(cls, doc: dict) -> "PartitionTable":
        rows = doc["rows"]
        # A table saved before stripes: every oid its own stripe.
        table = cls(len(rows), doc["replicas"], doc.get("stripe", 1))
        table.ptid = doc["ptid"]
        table.rows = [{nid: CellState(state) for nid, state in row}
                      for row in rows]
        return table

    def format(self, nodeStates=None) -> str:
        """
        The table as neoctl prints it: one column per storage node, one
        line per partition, a letter per cell (U, O, F, C) or C{.}.
        """
        nids = sorted(self.nids())
        lines = [f"ptid: {self.ptid}  replicas: {self.replicas}"
                 f"  partitions: {self.partitions}  stripe: {self.stripe}"]
        width = max([len(formatNid(n)) for n in nids] + [1])
        header = " " * 5 + " ".join(formatNid(n).rjust(width) for n in nids)
        lines.append(header)
        for partition, row in enumerate(self.rows):
            cells = " ".join(
                (row[n].letter if n in row else ".").rjust(width) for n in nids)
            lines.append(f"{partition:4d} {cells}")
        return "\n".join(lines)
