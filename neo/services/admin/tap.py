"""C{twistd neo-admin}: options and service assembly."""

from neo.lib.config import NodeOptions


class Options(NodeOptions):
    role = "admin"
    synopsis = "[options]"
    longdesc = ("Run the admin node of a NEO cluster: neoctl connects to it"
                " (at its --bind address) to watch and command the cluster.")
    nodeDefaults = dict(NodeOptions.nodeDefaults, bind="127.0.0.1:9999")


def makeService(options):
    from twisted.internet import reactor

    from neo.lib.tap import processCallbacks
    from neo.services.admin.node import AdminConfig, AdminNode
    fatal, shutdown = processCallbacks(reactor)
    return AdminNode(AdminConfig.fromOptions(options), reactor, fatal,
                     shutdown)
