"""Deterministic simulator for the consensus core: fake network, disk and clock, driven
in one thread from one seed, with checkers for agreement, durability, linearizability
and liveness.

Modules:
    world            the discrete-event scheduler, the driver loop around each Replica,
                     clients, the nemesis (crashes, partitions, attacks, reconfigurations)
    network, disk,   the fakes: lossy/duplicating/reordering network with partitions;
    clock            a disk that loses its unsynced tail; tick clocks drifting in the bound
    kv               the key-value state machine (get/put/cas, per-client dedup, snapshots)
    checkers         agreement, durability, liveness; the client history recorder
    linearizability  per-key Wing & Gong / Lowe search with memoization
    schedules        named fault schedules, and the one each broken variant runs under
    trace            trace hashing and readable lines
    __main__         python -m keeldb.consensus.sim --seeds 500 --profile aurora

A run is a pure function of its RunConfig (seed included). Nothing here may import
asyncio, socket, time, threading or os, or call random's global functions.
"""
