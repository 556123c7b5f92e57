"""The master node: node ids, cluster state, partition table, commits."""
