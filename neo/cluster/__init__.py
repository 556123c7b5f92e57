"""Sans-IO models of the cluster: partition table, node table."""
