"""
Starting NEO nodes as real processes through their twistd plugins, and
waiting for them: used by the benchmark and the tests.
"""

import os
import subprocess
import sys
import threading

#: Seconds a wait for a node may take.
DEADLINE = 60


class NodeFailed(Exception):
    """A node did not start (its output says why)."""


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


class LocalCluster:
    """
    A master, storage nodes and an admin node as real processes on this
    machine, on ephemeral loopback ports, with their logs in C{directory}.
    """

    def __init__(self, directory, storages=2, name="proc", partitions=12,
                 adapter="SQLite", replicas=0):
        self.directory = directory
        self.adapter = adapter
        self.databases = []
        self.name = name
        self.partitions = partitions
        self.replicas = replicas
        self.master = None
        self.storages = []
        self.admin = None
        self.storageCount = storages

    def startMaster(self, bind="127.0.0.1:0"):
        self.master = NodeProcess(
            "master", ["-c", self.name, "-b", bind,
                       "-p", str(self.partitions), "-r", str(self.replicas)],
            self.directory).start()
        self.masterAddress = self.master.waitReady()
        return self.master

    def restartMaster(self):
        """Start the master again on the address it had."""
        return self.startMaster(self.masterAddress)

    def storageProcess(self, i, *extra, cluster=None):
        return NodeProcess(
            "storage", ["-c", cluster or self.name, "-m", self.masterAddress,
                        "-a", self.adapter, "-d", self.database(i),
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

    def stop(self):
        for node in self.nodes():
            node.terminate()

    def database(self, i):
        """The database of storage node C{i} (SQLite: a file)."""
        if self.adapter != "SQLite":
            raise ValueError(f"give the {self.adapter} databases")
        return os.path.join(self.directory, f"storage{i}.db")

    def runNeoctl(self, *args, timeout=DEADLINE):
        """Run the neoctl script against the admin node."""
        return subprocess.run(
            [sys.executable, "-m", "neo.neoctl", "-a", self.adminAddress,
             *args], capture_output=True, text=True, timeout=timeout)

    def startCluster(self):
        """neoctl start, raising with neoctl's message if refused."""
        result = self.runNeoctl("start")
        if result.returncode:
            raise NodeFailed(f"neoctl start failed: {result.stderr}")

    def client(self, **kwargs):
        from neo.client.Storage import Storage
        kwargs.setdefault("timeout", DEADLINE)
        return Storage(master_nodes=self.masterAddress, name=self.name,
                       **kwargs)
