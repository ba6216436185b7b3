"""Ring, partition map, placement, membership and routing (multi-node deployments)."""
