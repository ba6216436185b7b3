"""Scenario scripts: a text format that drives a `Harness` and records what it printed.

Owns the parser and the interpreter of `tests/scenarios/consensus/*.txt`. A script is a
sequence of blocks in the style of etcd-io/raft's datadriven tests:

    # a comment explaining the claim
    propose 1 x
    ----
    <expected output, one line per event>
    <blank line>

`run_script(text)` executes every command and returns the script with the outputs the
harness actually printed, so a runner compares it with the file, and a rewrite writes it
back for review. Must never read files or the environment itself: the test runner does.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from fractions import Fraction

from keeldb.consensus.harness import AgreementError, Harness, describe
from keeldb.consensus.replica import Mutation, Options, Replica
from keeldb.consensus.types import Config, ConfigError, Member, NodeId, ProposalId, Slot

SEPARATOR = "----"


class ScriptError(ValueError):
    """The script itself is malformed (unknown command, bad argument)."""


@dataclass
class Block:
    comments: list[str]
    command: str
    expected: list[str]


def parse(text: str) -> tuple[list[Block], list[str]]:
    """Blocks, and the comment lines after the last block."""
    blocks: list[Block] = []
    comments: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip() or line.startswith("#"):
            if line.strip():
                comments.append(line)
            i += 1
            continue
        command = line.strip()
        i += 1
        if i >= len(lines) or lines[i].strip() != SEPARATOR:
            raise ScriptError(f"line {i}: expected '{SEPARATOR}' after '{command}'")
        i += 1
        expected: list[str] = []
        while i < len(lines) and lines[i].strip():
            expected.append(lines[i])
            i += 1
        blocks.append(Block(comments, command, expected))
        comments = []
    return blocks, comments


def render(blocks: list[Block], trailing: list[str]) -> str:
    out: list[str] = []
    for block in blocks:
        if out:
            out.append("")
        out.extend(block.comments)
        out.append(block.command)
        out.append(SEPARATOR)
        out.extend(block.expected if block.expected else ["ok"])
    if trailing:
        out.append("")
        out.extend(trailing)
    return "\n".join(out) + "\n"


def _pair(arg: str) -> tuple[int | None, int | None]:
    src, _, dst = arg.partition("->")
    return (int(src) if src and src != "*" else None, int(dst) if dst and dst != "*" else None)


def _kv(args: list[str]) -> tuple[list[str], dict[str, str]]:
    plain = [a for a in args if "=" not in a]
    pairs = dict(a.split("=", 1) for a in args if "=" in a)
    return plain, pairs


def _ids(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def _config(args: list[str]) -> Config:
    """`standard 1 2 3`, `aurora 1 2 3 4 5 6`, `single 1`, or members `1@a 2@b 3L@c` with
    `q1=` and `q2=` (an `L` marks a log-only member)."""
    plain, pairs = _kv(args)
    if not plain:
        raise ScriptError("a configuration needs a profile or members")
    kind, rest = plain[0], plain[1:]
    match kind:
        case "standard":
            return Config.standard([int(x) for x in rest] or [1, 2, 3])
        case "aurora":
            return Config.aurora([int(x) for x in rest] or [1, 2, 3, 4, 5, 6])
        case "single":
            return Config.single(int(rest[0]) if rest else 1)
        case "members":
            members = []
            for spec in rest:
                name, _, zone = spec.partition("@")
                log_only = name.endswith("L")
                members.append(Member(NodeId(int(name.rstrip("L"))), zone or "a", log_only))
            config = Config(tuple(members), int(pairs["q1"]), int(pairs["q2"]))
            config.validate()
            return config
    raise ScriptError(f"unknown configuration kind {kind!r}")


_OPTION_TYPES = {
    "mutations": "mutations",
    "clock_drift_max": "fraction",
}


class Interpreter:
    def __init__(self) -> None:
        self.options = Options(election_ticks_min=10, election_ticks_max=20)
        self.harness: Harness | None = None
        self.seed = 0

    @property
    def h(self) -> Harness:
        if self.harness is None:
            raise ScriptError("start with a 'nodes' command")
        return self.harness

    def execute(self, command: str) -> list[str]:
        words = command.split()
        name, args = words[0], words[1:]
        handler = getattr(self, "cmd_" + name.replace("-", "_"), None)
        if handler is None:
            raise ScriptError(f"unknown command {name!r}")
        try:
            out: list[str] = handler(args)
        except AgreementError as exc:  # a deliberately broken variant shows its violation
            out = [f"VIOLATION: {exc}"]
        if self.harness is not None:
            events = self.harness.take_events()
            out = events + out
        return out

    # ------------------------------------------------------------------ setup

    def cmd_options(self, args: list[str]) -> list[str]:
        _, pairs = _kv(args)
        changes: dict[str, object] = {}
        for key, value in pairs.items():
            kind = _OPTION_TYPES.get(key, "int")
            if kind == "mutations":
                changes[key] = frozenset(Mutation(v) for v in value.split(",") if v)
            elif kind == "fraction":
                changes[key] = Fraction(value)
            else:
                changes[key] = int(value)
        self.options = replace(self.options, **changes)  # type: ignore[arg-type]
        self.options.validate()
        return []

    def cmd_nodes(self, args: list[str]) -> list[str]:
        plain, pairs = _kv(args)
        seed = int(pairs.pop("seed", "0"))
        extra = _ids(pairs.pop("extra", ""))
        config = _config(plain + [f"{k}={v}" for k, v in pairs.items()])
        self.harness = Harness(config, options=self.options, seed=seed, extra_nodes=extra)
        return [f"config {config}"]

    # ------------------------------------------------------------------ time and network

    def cmd_tick(self, args: list[str]) -> list[str]:
        plain, pairs = _kv(args)
        n = int(plain[0]) if plain else 1
        nodes = _ids(pairs["nodes"]) if "nodes" in pairs else None
        self.h.tick(nodes, n)
        return []

    def cmd_run(self, args: list[str]) -> list[str]:
        """Tick everyone and deliver everything; prints only the non-message events."""
        n = int(args[0]) if args else 1
        self.h.run(n)
        events = self.h.take_events()
        return [e for e in events if e.split(" ", 1)[0].endswith(":")]

    def cmd_campaign(self, args: list[str]) -> list[str]:
        self.h.campaign(int(args[0]))
        return []

    def cmd_timeout(self, args: list[str]) -> list[str]:
        node = int(args[0])
        if not self.h.timeout(node):
            return [f"{node}: still a follower after 100 ticks"]
        return []

    def cmd_elect(self, args: list[str]) -> list[str]:
        self.h.elect(int(args[0]))
        return []

    def _deliver_args(self, args: list[str]) -> tuple[int | None, int | None, tuple[str, ...]]:
        src = dst = None
        kinds: tuple[str, ...] = ()
        for arg in args:
            if "->" in arg:
                src, dst = _pair(arg)
            else:
                kinds = tuple(arg.split(","))
        return src, dst, kinds

    def cmd_deliver(self, args: list[str]) -> list[str]:
        src, dst, kinds = self._deliver_args(args)
        self.h.deliver(src, dst, kinds)
        return []

    def cmd_deliver_all(self, args: list[str]) -> list[str]:
        self.h.deliver_all()
        return []

    def cmd_drop(self, args: list[str]) -> list[str]:
        src, dst, kinds = self._deliver_args(args)
        self.h.drop(src, dst, kinds)
        return []

    def cmd_duplicate(self, args: list[str]) -> list[str]:
        src, dst, kinds = self._deliver_args(args)
        return [f"duplicated {self.h.duplicate(src, dst, kinds)} messages"]

    def cmd_reverse(self, args: list[str]) -> list[str]:
        self.h.reverse()
        return []

    def cmd_net(self, args: list[str]) -> list[str]:
        self.h.process_all()
        return [describe(m) for m in self.h.net] or ["(empty)"]

    def cmd_partition(self, args: list[str]) -> list[str]:
        self.h.partition(*[_ids(a) for a in args])
        return []

    def cmd_block(self, args: list[str]) -> list[str]:
        src, dst = _pair(args[0])
        assert src is not None and dst is not None
        self.h.block(src, dst)
        return []

    def cmd_heal(self, args: list[str]) -> list[str]:
        self.h.heal()
        return []

    # ------------------------------------------------------------------ faults

    def cmd_crash(self, args: list[str]) -> list[str]:
        for n in _ids(",".join(args)):
            self.h.crash(n)
        return []

    def cmd_restart(self, args: list[str]) -> list[str]:
        for n in _ids(",".join(args)):
            self.h.restart(n)
        return []

    def cmd_stall(self, args: list[str]) -> list[str]:
        self.h.stall_disk(int(args[0]))
        return []

    def cmd_sync(self, args: list[str]) -> list[str]:
        self.h.unstall_disk(int(args[0]))
        return []

    # ------------------------------------------------------------------ clients

    def cmd_propose(self, args: list[str]) -> list[str]:
        """`propose N cmd...`, or `propose leader cmd...` for whichever replica leads."""
        if args[0] == "leader":
            leaders = self.h.leaders()
            if len(leaders) != 1:
                return [f"no single leader: {leaders}"]
            args = [str(leaders[0])] + args[1:]
        node = int(args[0])
        commands = args[1:]
        out = []
        for command in commands:
            pid = self.h.propose(node, command.encode(), process=False)
            if pid is None:
                hint = self.h.replica(node).leader_hint
                out.append(f"{node}: refused {command} (leader hint {hint})")
        self.h.process_all()
        return out

    def cmd_reconfig(self, args: list[str]) -> list[str]:
        node = int(args[0])
        try:
            config = _config(args[1:])
        except ConfigError as exc:
            return [f"rejected: {exc}"]
        pid = self.h.replica(node).propose_reconfig(config)
        self.h.process_all()
        if pid is None:
            return [f"{node}: refused reconfiguration"]
        self.h.labels[(NodeId(node), pid)] = _reconfig_label(self.h.replica(node), pid)
        return []

    def cmd_read(self, args: list[str]) -> list[str]:
        node = int(args[0])
        replica = self.h.replica(node)
        state = " ".join(c.decode() for c in self.h.nodes[NodeId(node)].state)
        if replica.read_lease():
            return [f"{node}: lease read ok [{state}]"]
        return [f"{node}: lease read refused"]

    def cmd_reads(self, args: list[str]) -> list[str]:
        """Which replicas may answer a strongly consistent read now; more than one at once
        breaks linearizability."""
        ok = []
        parts = []
        for node_id, node in self.h.nodes.items():
            if node.replica is None:
                parts.append(f"{node_id}:down")
                continue
            allowed = node.replica.read_lease()
            parts.append(f"{node_id}:{'yes' if allowed else 'no'}")
            if allowed:
                ok.append(node_id)
        line = "lease reads " + " ".join(parts)
        if len(ok) > 1:
            line += f"  VIOLATION: {len(ok)} replicas serve lease reads at once"
        return [line]

    def cmd_snapshot(self, args: list[str]) -> list[str]:
        node = int(args[0])
        slot = self.h.snapshot(node)
        return [f"{node}: snapshot at {slot}"]

    def cmd_status(self, args: list[str]) -> list[str]:
        self.h.process_all()
        return self.h.status()

    def cmd_log(self, args: list[str]) -> list[str]:
        node = int(args[0])
        replica = self.h.replica(node)
        out = []
        for slot in sorted(s for s in replica.durable_state().log):
            le = replica.entry_at(Slot(slot))
            assert le is not None
            out.append(f"{node}: {slot} {le.entry} @{le.ballot}")
        return out or [f"{node}: (empty log)"]

    def cmd_config(self, args: list[str]) -> list[str]:
        node = int(args[0])
        replica = self.h.replica(node)
        return [f"{node}: from {first}: {config}" for first, config in replica.configs]

    def cmd_check(self, args: list[str]) -> list[str]:
        """Agreement: every pair of live state machines agrees on their common prefix."""
        states = {n: s.state for n, s in self.h.nodes.items() if s.replica is not None}
        ids = sorted(states)
        for a in ids:
            for b in ids:
                k = min(len(states[a]), len(states[b]))
                if states[a][:k] != states[b][:k]:
                    return [f"DISAGREEMENT between {a} and {b}"]
        return [f"agreement: {len(self.h.chosen)} slots chosen, no conflicts"]


def _reconfig_label(replica: Replica, pid: ProposalId) -> str:
    """How acknowledgements of a reconfiguration print: with its epoch (the slot it was
    given), or without one while it still waits for a slot."""
    log = replica.durable_state().log
    for slot in sorted(log):
        entry = log[slot].entry
        if entry.config is not None and entry.proposal_id == pid:
            return f"reconfig epoch {entry.config.epoch}"
    return "reconfig"


def run_script(text: str) -> str:
    """Execute a script; return it with each block's output replaced by what happened."""
    blocks, trailing = parse(text)
    interp = Interpreter()
    out_blocks = []
    for block in blocks:
        output = interp.execute(block.command)
        out_blocks.append(Block(block.comments, block.command, output or ["ok"]))
    return render(out_blocks, trailing)
