"""
Test clusters.

L{InProcessCluster} runs a master, storage nodes and an admin node as
services in the process's reactor thread (the one crochet runs for the
client), on ephemeral loopback ports with SQLite files in a temporary
directory: fast enough to give every ZODB conformance test its own
cluster.  L{ProcessCluster} starts real node processes through the twistd
plugins, for what only real processes show (wiring, exit codes, kill -9).
"""

import os
import shutil
import tempfile

from twisted.application import service
from twisted.internet import defer

from neo.client.bridge import Bridge
from neo.lib.config import formatAddress
from neo.lib.states import ClusterState

#: Seconds any wait of a test cluster may take.
DEADLINE = 60


class InProcessCluster:
    """
    A whole cluster in this process.  Methods are called from the test
    thread; the nodes live in the reactor thread.
    """

    def __init__(self, storages=2, partitions=12, replicas=0, name=None,
                 adapter="SQLite"):
        self.name = name or "test-%d" % os.getpid()
        self.adapter = adapter
        self.databases = []
        self.storageCount = storages
        self.partitions = partitions
        self.replicas = replicas
        self.directory = tempfile.mkdtemp(prefix="neo-test-")
        self.bridge = Bridge(timeout=DEADLINE)
        self.root = None
        self.master = None
        self.storages = []
        self.admin = None
        self.fatal = []

    def _fatal(self, reason):
        self.fatal.append(reason)

    # -- In the reactor thread ----------------------------------------------

    @defer.inlineCallbacks
    def _start(self):
        from twisted.internet import reactor
        from neo.services.admin.node import AdminConfig, AdminNode
        from neo.services.master.config import MasterConfig
        from neo.services.master.node import MasterNode
        self.root = service.MultiService()
        self.root.startService()
        self.master = MasterNode(
            MasterConfig(cluster=self.name, masters=(), bind=("127.0.0.1", 0),
                         partitions=self.partitions, replicas=self.replicas),
            reactor, self._fatal)
        self.master.setServiceParent(self.root)
        address = yield self.master.getServiceNamed("listener").whenListening()
        self.masters = (address,)
        for i in range(self.storageCount):
            self._addStorage(i)
        self.admin = AdminNode(
            AdminConfig(self.name, self.masters, ("127.0.0.1", 0)), reactor,
            self._fatal)
        self.admin.setServiceParent(self.root)
        self.adminAddress = yield self.admin.getServiceNamed(
            "listener").whenListening()
        yield self._waitFor(lambda: len(self.master.storages())
                            == self.storageCount)
        self.master.setClusterState(ClusterState.VERIFYING)
        yield self.master.whenState(ClusterState.RUNNING)

    def _addStorage(self, i, reset=False):
        from twisted.internet import reactor
        from neo.services.storage.config import StorageConfig
        from neo.services.storage.node import StorageNode
        node = StorageNode(
            StorageConfig(cluster=self.name, masters=self.masters,
                          bind=("127.0.0.1", 0), adapter=self.adapter,
                          database=self.database(i), reset=reset),
            reactor, self._fatal)
        node.setServiceParent(self.root)
        if i < len(self.storages):
            self.storages[i] = node
        else:
            self.storages.append(node)
        return node

    @defer.inlineCallbacks
    def _waitFor(self, predicate, timeout=DEADLINE):
        from twisted.internet import reactor, task
        deadline = reactor.seconds() + timeout
        while not predicate():
            if self.fatal:
                raise NodeFailed("; ".join(self.fatal))
            if reactor.seconds() > deadline:
                raise TimeoutError("test cluster wait timed out")
            yield task.deferLater(reactor, 0.01, lambda: None)

    def database(self, i):
        """The database of storage node C{i}, made on first use."""
        return storageDatabase(self, i)

    def _stop(self):
        if self.root is None:
            return None
        root, self.root = self.root, None
        return root.stopService()

    # -- From the test thread -----------------------------------------------

    def start(self):
        try:
            self.bridge.call(self._start)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self):
        try:
            self.bridge.call(self._stop)
        finally:
            cleanDatabases(self)

    @property
    def masterAddress(self):
        return " ".join(formatAddress(a) for a in self.masters)

    def client(self, **kwargs):
        from neo.client.Storage import Storage
        kwargs.setdefault("timeout", DEADLINE)
        return Storage(master_nodes=self.masterAddress, name=self.name,
                       **kwargs)

    def stopStorage(self, i):
        """Stop storage node C{i} (its database stays)."""
        node = self.storages[i]
        self.bridge.call(lambda: node.disownServiceParent())

    def restartStorage(self, i):
        self.bridge.call(lambda: self._addStorage(i))

    def waitForState(self, state):
        self.bridge.call(self.master.whenState, state)


def storageDatabase(cluster, i):
    """
    The database of storage node C{i} of a test cluster: a file in its
    directory for SQLite, a database with a name unique to this run for
    MySQL (created by the node itself, dropped by L{cleanDatabases}).
    """
    while len(cluster.databases) <= i:
        if cluster.adapter == "MySQL":
            from tests import mysql
            name = mysql.newDatabaseName()
            cluster.databases.append((name, mysql.dsn(name)))
        else:
            n = len(cluster.databases)
            cluster.databases.append(
                (None, os.path.join(cluster.directory, f"s{n}.db")))
    return cluster.databases[i][1]


def cleanDatabases(cluster):
    try:
        names = [name for name, _ in cluster.databases if name]
        if names:
            from tests import mysql
            mysql.dropDatabases(names)
    finally:
        shutil.rmtree(cluster.directory, ignore_errors=True)


# -- Real processes ------------------------------------------------------------

from neo.lib.launch import (  # noqa: E402,F401
    LocalCluster, NodeFailed, NodeProcess, twistdCommand)


class ProcessCluster(LocalCluster):
    """A local cluster whose MySQL databases are unique to the test run."""

    def database(self, i):
        return storageDatabase(self, i)

    def clean(self):
        """Drop the MySQL databases (the directory is the caller's)."""
        names = [name for name, _ in self.databases if name]
        if names:
            from tests import mysql
            mysql.dropDatabases(names)

    def neoctl(self, *args, check=True, timeout=DEADLINE):
        """Run the neoctl script; returns (exit code, stdout, stderr)."""
        result = self.runNeoctl(*args, timeout=timeout)
        if check and result.returncode:
            raise AssertionError(f"neoctl {' '.join(args)} failed:"
                                 f" {result.stderr}")
        return result.returncode, result.stdout, result.stderr


def waitFor(predicate, timeout=DEADLINE, interval=0.1):
    """Poll C{predicate} (about other processes) until true, or fail."""
    import time
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s: {predicate}")
        time.sleep(interval)  # waiting for another process
