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
import subprocess
import sys
import tempfile
import threading

from twisted.application import service
from twisted.internet import defer

from neo.client.bridge import Bridge
from neo.lib.config import formatAddress
from neo.lib.states import ClusterState

#: Seconds any wait of a test cluster may take.
DEADLINE = 60


class NodeFailed(Exception):
    """A node of a test cluster reported a fatal error."""


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

def twistdCommand(role, *args):
    """The command line running C{twistd -n neo-ROLE ARGS}."""
    # twisted/scripts/twistd.py has no __main__ guard: run() it explicitly.
    return [sys.executable, "-c",
            "from twisted.scripts.twistd import run; run()",
            "--nodaemon", "--pidfile=", f"neo-{role}", *args]


class NodeProcess:
    """
    One node process: its output goes to a file and to a reader thread that
    notices the "neo-ROLE running on HOST:PORT" line.
    """

    def __init__(self, role, args, directory, name=None):
        self.role = role
        self.name = name or role
        self.args = list(args)
        self.directory = directory
        self.logPath = os.path.join(directory, f"{self.name}.log")
        self.address = None
        self.process = None

    def start(self):
        self._ready = threading.Event()
        self._lines = []
        self.process = subprocess.Popen(
            twistdCommand(self.role, *self.args), cwd=self.directory,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        return self

    def _read(self):
        marker = f"neo-{self.role} running on "
        with open(self.logPath, "ab") as log:
            for raw in self.process.stdout:
                log.write(raw)
                log.flush()
                line = raw.decode("utf-8", "replace")
                self._lines.append(line)
                if marker in line and not self._ready.is_set():
                    self.address = line.split(marker, 1)[1].strip()
                    self._ready.set()
        self._ready.set()

    def waitReady(self, timeout=DEADLINE):
        """Wait for the running line; raise with the output if it dies."""
        self._ready.wait(timeout)
        if self.address is None:
            raise NodeFailed(f"{self.name} did not start:\n" + self.output())
        return self.address

    def output(self, tail=60):
        return "".join(self._lines[-tail:])

    def waitExit(self, timeout=DEADLINE):
        code = self.process.wait(timeout)
        self._reader.join(timeout)
        return code

    def kill(self):
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(DEADLINE)

    def terminate(self, timeout=10):
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()


class ProcessCluster:
    """A master, storage nodes and an admin node as real processes."""

    def __init__(self, directory, storages=2, name="proc", partitions=12,
                 adapter="SQLite"):
        self.directory = directory
        self.adapter = adapter
        self.databases = []
        self.name = name
        self.partitions = partitions
        self.master = None
        self.storages = []
        self.admin = None
        self.storageCount = storages

    def startMaster(self, bind="127.0.0.1:0"):
        self.master = NodeProcess(
            "master", ["-c", self.name, "-b", bind,
                       "-p", str(self.partitions)], self.directory).start()
        self.masterAddress = self.master.waitReady()
        return self.master

    def restartMaster(self):
        """Start the master again on the address it had."""
        return self.startMaster(self.masterAddress)

    def storageProcess(self, i, *extra, cluster=None):
        return NodeProcess(
            "storage", ["-c", cluster or self.name, "-m", self.masterAddress,
                        "-a", self.adapter, "-d", storageDatabase(self, i),
                        *extra],
            self.directory, name=f"storage{i}")

    def start(self):
        self.startMaster()
        self.storages = [self.storageProcess(i).start()
                         for i in range(self.storageCount)]
        self.admin = NodeProcess(
            "admin", ["-c", self.name, "-m", self.masterAddress,
                      "-b", "127.0.0.1:0"], self.directory).start()
        for node in self.storages + [self.admin]:
            node.waitReady()
        self.adminAddress = self.admin.address
        return self

    def restart(self):
        """Start every node again on the same databases (after a kill)."""
        self.start()

    def nodes(self):
        return [n for n in [self.master, self.admin, *self.storages]
                if n is not None]

    def killAll(self):
        for node in self.nodes():
            node.kill()

    def stop(self):
        for node in self.nodes():
            node.terminate()

    def clean(self):
        """Drop the MySQL databases (the directory is the caller's)."""
        names = [name for name, _ in self.databases if name]
        if names:
            from tests import mysql
            mysql.dropDatabases(names)

    def neoctl(self, *args, check=True, timeout=DEADLINE):
        """Run the neoctl script; returns (exit code, stdout, stderr)."""
        result = subprocess.run(
            [sys.executable, "-m", "neo.neoctl", "-a", self.adminAddress,
             *args], capture_output=True, text=True, timeout=timeout)
        if check and result.returncode:
            raise AssertionError(f"neoctl {' '.join(args)} failed:"
                                 f" {result.stderr}")
        return result.returncode, result.stdout, result.stderr

    def client(self, **kwargs):
        from neo.client.Storage import Storage
        kwargs.setdefault("timeout", DEADLINE)
        return Storage(master_nodes=self.masterAddress, name=self.name,
                       **kwargs)
