"""C{twistd neo-master}: options and service assembly."""

from twisted.python import usage

from neo.cluster.partition_table import PartitionTable
from neo.lib.config import NodeOptions


class Options(NodeOptions):
    role = "master"
    synopsis = "[options]"
    longdesc = ("Run the primary master of a NEO cluster: it gives node ids,"
                " keeps the partition table and the cluster state, and"
                " coordinates every commit.  It keeps no data of its own.")
    optParameters = NodeOptions.optParameters + [
        ["partitions", "p", None, "Number of partitions, used when the"
         " partition table is first made [default: 12]."],
        ["replicas", "r", None, "Copies of each partition beyond the first"
         " [default: 0]."],
        ["stripe", None, None, "Consecutive oids that share a partition,"
         " used when the partition table is first made: objects created"
         " together then live on one storage node, and commits that change"
         " them together involve that node only; 1 spreads consecutive"
         f" objects over every node [default: {PartitionTable.STRIPE}]."],
    ]
    nodeDefaults = dict(NodeOptions.nodeDefaults, bind="127.0.0.1:10000",
                        partitions="12", replicas="0",
                        stripe=str(PartitionTable.STRIPE))

    def checkOptions(self):
        for key, low in (("partitions", 1), ("replicas", 0), ("stripe", 1)):
            try:
                self[key] = int(self[key])
            except ValueError:
                raise usage.UsageError(f"--{key} must be an integer")
            if self[key] < low:
                raise usage.UsageError(f"--{key} must be at least {low}")


def makeService(options):
    from twisted.internet import reactor

    from neo.lib.tap import processCallbacks
    from neo.services.master.config import MasterConfig
    from neo.services.master.node import MasterNode
    fatal, shutdown = processCallbacks(reactor)
    return MasterNode(MasterConfig.fromOptions(options), reactor, fatal,
                      shutdown)
