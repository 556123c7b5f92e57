"""
Logging through L{twisted.logger}, with the node id and the cluster name on
every event.
"""

from twisted.logger import Logger

from neo.lib.ids import formatNid


class NodeLogger(Logger):
    """
    A L{Logger} that stamps every event with C{node} and C{cluster} fields
    taken from a node object (which must have C{nid} and C{cluster}
    attributes), and prefixes the text with them.
    """

    def __init__(self, node, namespace=None):
        super().__init__(namespace=namespace, source=node)
        self._node = node

    def emit(self, level, format=None, **kwargs):
        node = self._node
        kwargs.setdefault("node", formatNid(getattr(node, "nid", None)))
        kwargs.setdefault("cluster", getattr(node, "cluster", "?"))
        kwargs.setdefault("role", getattr(node, "role", "?"))
        prefix = "[{cluster} {role} {node}] "
        super().emit(level, prefix + (format or ""), **kwargs)
