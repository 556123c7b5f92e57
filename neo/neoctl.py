# -*- test-case-name: tests.unit.test_neoctl -*-
"""
neoctl: command a NEO cluster through its admin node.

    neoctl [-a ADMIN_HOST:PORT] start
    neoctl print cluster | node [TYPE] | pt | ids
    neoctl set cluster STOPPING
"""

import sys

from twisted.internet import defer, task
from twisted.internet.endpoints import clientFromString, connectProtocol
from twisted.python import usage

from neo.lib.config import clientEndpoint, parseAddress
from neo.lib.ids import formatNid, formatTid, u64
from neo.lib.states import ClusterState, NodeType
from neo.cluster.partition_table import PartitionTable
from neo.protocols import commands as c
from neo.protocols.base import NodeProtocol
from neo.protocols.errors import NeoError


class _Command(usage.Options):
    def run(self, proto) -> defer.Deferred:
        raise NotImplementedError


class StartOptions(_Command):
    synopsis = "neoctl start"
    longdesc = ("Allow a cluster waiting in RECOVERING to start: a new"
                " cluster builds its partition table over the storage nodes"
                " present; an existing one starts without its missing nodes"
                " if every partition still has a readable copy.")

    @defer.inlineCallbacks
    def run(self, proto):
        answer = yield proto.ask(c.SetClusterState,
                                 state=ClusterState.VERIFYING)
        return answer["message"]


class PrintCluster(_Command):
    synopsis = "neoctl print cluster"
    longdesc = "Print the cluster state."

    @defer.inlineCallbacks
    def run(self, proto):
        answer = yield proto.ask(c.AskClusterState)
        state = answer["state"]
        return state.value if state else "unknown (no primary master)"


class PrintNode(_Command):
    synopsis = "neoctl print node [master|storage|admin|client]"
    longdesc = "Print the nodes of the cluster (of one type if given)."

    def parseArgs(self, nodeType=None):
        if nodeType is not None:
            try:
                nodeType = NodeType(nodeType.upper())
            except ValueError:
                raise usage.UsageError(f"unknown node type {nodeType!r}")
            self["type"] = nodeType.value
        else:
            self["type"] = None

    @defer.inlineCallbacks
    def run(self, proto):
        answer = yield proto.ask(c.AskNodeList, nodeType=self["type"])
        lines = []
        for nid, nodeType, address, state in answer["nodes"]:
            lines.append(f"{formatNid(nid):<6} {nodeType:<8}"
                         f" {address or '-':<22} {state}")
        return "\n".join(lines) if lines else "no node"


class PrintPT(_Command):
    synopsis = "neoctl print pt"
    longdesc = ("Print the partition table: one column per storage node,"
                " one line per partition; U up to date, O out of date,"
                " F feeding, C corrupted, . no cell.")

    @defer.inlineCallbacks
    def run(self, proto):
        answer = yield proto.ask(c.AskPartitionList)
        doc = answer["partitionTable"]
        if not doc:
            return "no partition table yet"
        return PartitionTable.fromJson(doc).format()


class PrintIDs(_Command):
    synopsis = "neoctl print ids"
    longdesc = "Print the last OID, the last TID and the partition table id."

    @defer.inlineCallbacks
    def run(self, proto):
        answer = yield proto.ask(c.AskClusterIDs)
        oid = answer["lastOid"]
        return "\n".join([
            "last_oid = " + (f"0x{u64(oid):016x}" if oid else "none"),
            "last_tid = " + formatTid(answer["lastTid"]),
            f"last_ptid = {answer['ptid']}"])


class PrintOptions(_Command):
    synopsis = "neoctl print cluster|node [TYPE]|pt|ids"
    subCommands = [
        ["cluster", None, PrintCluster, "Print the cluster state."],
        ["node", None, PrintNode, "Print the nodes."],
        ["pt", None, PrintPT, "Print the partition table."],
        ["ids", None, PrintIDs, "Print the last ids."],
    ]

    def postOptions(self):
        if self.subCommand is None:
            raise usage.UsageError("print what? cluster, node, pt or ids")

    def run(self, proto):
        return self.subOptions.run(proto)


SETTABLE = (ClusterState.STOPPING, ClusterState.VERIFYING)


class SetCluster(_Command):
    synopsis = "neoctl set cluster STATE"
    longdesc = ("Set the cluster state: STOPPING shuts the whole cluster down"
                " in order (transactions being committed finish first);"
                " VERIFYING is what 'neoctl start' does.")

    def parseArgs(self, state):
        try:
            state = ClusterState(state.upper())
        except ValueError:
            state = None
        if state not in SETTABLE:
            raise usage.UsageError("the cluster state can be set to "
                                   + " or ".join(s.value for s in SETTABLE))
        self["state"] = state

    @defer.inlineCallbacks
    def run(self, proto):
        answer = yield proto.ask(c.SetClusterState, state=self["state"])
        return answer["message"]


class SetOptions(_Command):
    synopsis = "neoctl set cluster STATE"
    subCommands = [["cluster", None, SetCluster, "Set the cluster state."]]

    def postOptions(self):
        if self.subCommand is None:
            raise usage.UsageError("set what? cluster")

    def run(self, proto):
        return self.subOptions.run(proto)


class Options(usage.Options):
    synopsis = "neoctl [-a ADMIN_HOST:PORT] COMMAND [ARGS]"
    longdesc = "Command a NEO cluster through its admin node."
    optParameters = [
        ["address", "a", "127.0.0.1:9999", "The admin node, HOST:PORT."],
        ["timeout", "t", "30", "Seconds to wait for an answer."],
    ]
    subCommands = [
        ["start", None, StartOptions, "Allow the cluster to start."],
        ["print", None, PrintOptions, "Print cluster information."],
        ["set", None, SetOptions, "Change the cluster state."],
    ]

    def postOptions(self):
        if self.subCommand is None:
            raise usage.UsageError("a command is needed")
        self["address"] = parseAddress(self["address"])
        try:
            self["timeout"] = float(self["timeout"])
        except ValueError:
            raise usage.UsageError("--timeout must be a number")


@defer.inlineCallbacks
def run(reactor, options, write=print):
    """Run the parsed command; the Deferred fires with the text printed."""
    endpoint = clientFromString(reactor, clientEndpoint(options["address"]))
    address = "%s:%d" % options["address"]
    try:
        proto = yield connectProtocol(endpoint, NodeProtocol())
    except Exception as e:
        raise NeoctlError(f"cannot reach the admin node at {address}: {e}")
    try:
        d = options.subOptions.run(proto)
        d.addTimeout(options["timeout"], reactor)
        try:
            text = yield d
        except defer.TimeoutError:
            raise NeoctlError(f"no answer from the admin node at {address}"
                              f" within {options['timeout']:g} s")
        except NeoError as e:
            raise NeoctlError(f"{type(e).__name__}: {e}")
    finally:
        proto.close()
    write(text)
    return text


class NeoctlError(Exception):
    """A command failed; the message says why."""


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    options = Options()
    try:
        options.parseOptions(argv)
    except usage.UsageError as e:
        sys.stderr.write(f"{options}\nneoctl: {e}\n")
        sys.exit(2)

    def failed(failure):
        failure.trap(NeoctlError)
        sys.stderr.write(f"neoctl: {failure.value}\n")
        raise SystemExit(1)

    task.react(lambda reactor: run(reactor, options).addErrback(failed))


if __name__ == "__main__":
    main()
