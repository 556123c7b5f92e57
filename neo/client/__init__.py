"""
The NEO client: a ZODB storage.

    from neo.client.Storage import Storage
    storage = Storage(master_nodes="127.0.0.1:10000", name="main")

or, in a ZConfig file (zope.conf)::

    %import neo.client
    <zodb>
      <NEOStorage>
        master_nodes 127.0.0.1:10000
        name main
      </NEOStorage>
    </zodb>
"""
