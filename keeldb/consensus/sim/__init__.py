"""Deterministic simulator for the consensus core: fake network, disk and clock, driven
in one thread from one seed, with checkers for agreement, durability, linearizability
and liveness.
"""
