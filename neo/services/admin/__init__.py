"""The admin node: neoctl's door to the cluster."""
