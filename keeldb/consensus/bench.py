"""The consensus benchmark's workload: a replica group on a perfect in-memory network.

Owns the deterministic part of the benchmark: build N replicas, elect a leader, then feed
batches of client commands and deliver every message until they are chosen, counting what
was committed and how many messages it took. Must never read a clock (this package is
sans-IO): `benchmarks/consensus_bench.py` times `run_workload` with the process CPU clock.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from keeldb.consensus.messages import Message
from keeldb.consensus.replica import Options, Replica
from keeldb.consensus.types import Config, NodeId

ROUNDS_PER_BATCH_MAX = 1_000  # delivery rounds one batch may take before the run is broken


@dataclass(frozen=True, slots=True)
class WorkloadResult:
    entries_committed: int
    messages_delivered: int
    records_persisted: int


def profile_config(profile: str) -> Config:
    match profile:
        case "standard":
            return Config.standard([1, 2, 3])
        case "aurora":
            return Config.aurora([1, 2, 3, 4, 5, 6])
        case "single":
            return Config.single(1)
    raise ValueError(f"unknown profile {profile!r}")


class Group:
    """N replicas and a FIFO network that delivers everything, in order."""

    def __init__(self, config: Config, options: Options, seed: int = 1) -> None:
        self.replicas = {
            n: Replica(n, config, random.Random(seed * 7919 + n), options) for n in config.node_ids
        }
        self.net: list[Message] = []
        self.acked = 0
        self.delivered = 0
        self.persisted = 0

    def process(self) -> None:
        net = self.net
        for replica in self.replicas.values():
            rd = replica.ready()
            self.persisted += len(rd.persist)
            net.extend(rd.send_now)
            net.extend(rd.send_after_persist)
            self.acked += len(rd.acknowledged)
            replica.advance(rd)

    def pump(self) -> None:
        replicas = self.replicas
        for _ in range(ROUNDS_PER_BATCH_MAX):
            self.process()
            if not self.net:
                return
            batch, self.net = self.net, []
            self.delivered += len(batch)
            for msg in batch:
                replicas[msg.dst].step(msg)
        raise AssertionError("the network did not quiesce")

    def elect(self, node_id: NodeId) -> Replica:
        leader = self.replicas[node_id]
        assert leader.campaign()
        self.pump()
        assert leader.is_leader
        return leader


def run_workload(
    profile: str, entries: int, batch: int = 64, options: Options | None = None
) -> WorkloadResult:
    """Commit `entries` commands of 16 bytes in batches of `batch`, keeping up to the
    pipeline's worth of batches in flight."""
    opts = options if options is not None else Options(batch_entries_max=batch)
    group = Group(profile_config(profile), opts)
    leader = group.elect(NodeId(1))
    command = b"x" * 16
    proposed = 0
    replicas = group.replicas
    while group.acked < entries:
        # One batch per network round: with Accept and Accepted each taking a round, about
        # two batches are in flight at any time.
        for _ in range(min(batch, entries - proposed)):
            assert leader.propose(command) is not None
            proposed += 1
        group.process()
        batch_net, group.net = group.net, []
        group.delivered += len(batch_net)
        for msg in batch_net:
            replicas[msg.dst].step(msg)
        if proposed >= entries:
            group.pump()
    return WorkloadResult(group.acked, group.delivered, group.persisted)


def main() -> None:
    """Print the deterministic cost of the workload (messages and records per entry); the
    rate in entries per CPU second is measured by benchmarks/consensus_bench.py."""
    entries = 20_000
    for profile in ("standard", "aurora"):
        result = run_workload(profile, entries)
        print(
            f"{profile:9s} {result.entries_committed:,} entries: "
            f"{result.messages_delivered / result.entries_committed:.3f} messages and "
            f"{result.records_persisted / result.entries_committed:.3f} records per entry "
            f"(rate: python benchmarks/consensus_bench.py)"
        )


if __name__ == "__main__":
    main()
