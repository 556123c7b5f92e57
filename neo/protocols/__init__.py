"""
The wire: AMP commands spoken between NEO nodes, their clients and neoctl.

L{neo.protocols.commands} declares every command; L{neo.protocols.arguments}
the argument types (8-byte ids, records of any size up to L{MAX_RECORD});
L{neo.protocols.errors} the errors that may cross the wire;
L{neo.protocols.base} the connection class every role uses.
"""
