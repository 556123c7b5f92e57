# -*- test-case-name: tests.unit.test_partition_table -*-
"""
The states of nodes, cells and clusters, as named on the wire and by neoctl.
"""

from enum import Enum


class NodeType(str, Enum):
    MASTER = "MASTER"
    STORAGE = "STORAGE"
    ADMIN = "ADMIN"
    CLIENT = "CLIENT"


class NodeState(str, Enum):
    #: Identified and taking part in the cluster.
    RUNNING = "RUNNING"
    #: A storage node identified but not (yet) used.
    PENDING = "PENDING"
    #: Known but not connected.
    DOWN = "DOWN"
    #: Forgotten.
    UNKNOWN = "UNKNOWN"


class CellState(str, Enum):
    UP_TO_DATE = "UP_TO_DATE"
    OUT_OF_DATE = "OUT_OF_DATE"
    FEEDING = "FEEDING"
    CORRUPTED = "CORRUPTED"
    #: Only in change notifications: the cell is removed.
    DISCARDED = "DISCARDED"

    @property
    def readable(self) -> bool:
        return self in (CellState.UP_TO_DATE, CellState.FEEDING)

    @property
    def writable(self) -> bool:
        return self in (CellState.UP_TO_DATE, CellState.FEEDING,
                        CellState.OUT_OF_DATE)

    @property
    def letter(self) -> str:
        return self.value[0]


class ClusterState(str, Enum):
    RECOVERING = "RECOVERING"
    VERIFYING = "VERIFYING"
    RUNNING = "RUNNING"
    STOPPING = "STOPPING"
