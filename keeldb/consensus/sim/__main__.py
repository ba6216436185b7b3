"""Command line for the simulator.

    python -m keeldb.consensus.sim --seeds 500 --profile aurora
    python -m keeldb.consensus.sim --seed 17 --profile standard --trace
    python -m keeldb.consensus.sim --seeds 200 --mutation ACK_BEFORE_PERSIST

It owns argument parsing and printing: a summary over many seeds, a readable trace of one,
and for every failing seed the one command that replays it. It never changes what a run
does; the only thing it reads from the machine is the process's CPU time, for the summary.
"""

from __future__ import annotations

import argparse
import resource
import sys
from dataclasses import replace

from keeldb.consensus.replica import Mutation
from keeldb.consensus.sim.checkers import CHECKERS
from keeldb.consensus.sim.schedules import SCHEDULES, config_for
from keeldb.consensus.sim.world import PROFILES, RunConfig, RunResult, run

# Failing seeds printed in full; the rest are only counted.
FAILURES_SHOWN_MAX = 20


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m keeldb.consensus.sim",
                                     description=__doc__.splitlines()[0])
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--seeds", type=int, default=None, help="run seeds FIRST..FIRST+N-1")
    which.add_argument("--seed", type=int, default=None, help="run one seed")
    parser.add_argument("--first", type=int, default=0, help="first seed for --seeds")
    parser.add_argument("--profile", choices=[*PROFILES, "all"], default="standard")
    parser.add_argument("--mutation", action="append", default=[],
                        choices=sorted(m.name for m in Mutation),
                        help="run a deliberately broken variant (repeatable)")
    parser.add_argument("--schedule", choices=sorted(SCHEDULES), default=None,
                        help="fault schedule (default: all-faults, or the one that exposes "
                             "the chosen mutation)")
    parser.add_argument("--trace", action="store_true", help="print the readable trace")
    parser.add_argument("--hash", action="store_true", help="print only the trace hash")
    parser.add_argument("--fault-ms", type=int, default=None,
                        help="length of the faulty phase in simulated milliseconds")
    parser.add_argument("--no-faults", action="store_true", help="calm network, no nemesis")
    parser.add_argument("--clock-drift", type=float, default=None,
                        help="relative clock drift to simulate (default: the core's bound)")
    parser.add_argument("--thrifty", action="store_true",
                        help="replicas send Accepts to a phase-2 quorum only")
    parser.add_argument("--stop-on-failure", action="store_true")
    return parser.parse_args(argv)


def _config(args: argparse.Namespace, seed: int, profile: str) -> RunConfig:
    mutations = frozenset(Mutation[name] for name in args.mutation)
    schedule = "calm" if args.no_faults else args.schedule
    config = config_for(seed, profile, mutations, schedule, keep_trace=args.trace)
    if args.fault_ms is not None:
        config = replace(config, fault_us=args.fault_ms * 1000)
    if args.clock_drift is not None:
        config = replace(config, clock_drift=args.clock_drift)
    if args.thrifty:
        config = replace(config, thrifty_accepts=True)
    return config


def _print_failure(result: RunResult) -> None:
    print(f"FAIL seed {result.config.seed} profile {result.config.profile}: "
          f"{', '.join(result.verdicts.checkers_failed())}")
    for violation in result.verdicts.violations[:5]:
        text = str(violation)
        print("  " + text.replace("\n", "\n  "))
    print(f"  replay: {result.replay_command()}")


def main(argv: list[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    profiles = list(PROFILES) if args.profile == "all" else [args.profile]
    if args.seed is not None:
        seeds = [args.seed]
    else:
        seeds = list(range(args.first, args.first + (args.seeds if args.seeds else 100)))
    cpu_start = _cpu_seconds()
    failed_total = 0
    for profile in profiles:
        totals = {"ops": 0, "abandoned": 0, "acked": 0, "elections": 0, "leaders": 0,
                  "reconfigs": 0, "crashes": 0, "partitions": 0, "snapshots": 0,
                  "sim_us": 0, "events": 0, "recovery_max_us": 0}
        by_checker = {name: 0 for name in CHECKERS}
        failures: list[RunResult] = []
        unknown = 0
        for seed in seeds:
            result = run(_config(args, seed, profile))
            if args.hash:
                print(f"{profile} seed {seed} {result.trace_hash}")
            if args.trace:
                print("\n".join(result.trace_lines))
            totals["ops"] += result.ops_completed
            totals["abandoned"] += result.ops_abandoned
            totals["acked"] += result.writes_acknowledged
            totals["elections"] += result.elections
            totals["leaders"] += result.leaders_elected
            totals["reconfigs"] += result.reconfigs_applied
            totals["crashes"] += result.crashes
            totals["partitions"] += result.partitions
            totals["snapshots"] += result.snapshots_installed
            totals["sim_us"] += result.end_us
            totals["events"] += result.events
            if result.first_completion_after_heal_us is not None:
                totals["recovery_max_us"] = max(totals["recovery_max_us"],
                                                result.first_completion_after_heal_us)
            lin = result.verdicts.linearizability
            if lin is not None and lin.verdict.name == "UNKNOWN":
                unknown += 1
            if not result.ok:
                for name in result.verdicts.checkers_failed():
                    by_checker[name] += 1
                failures.append(result)
                if len(failures) <= FAILURES_SHOWN_MAX:
                    _print_failure(result)
                if args.stop_on_failure:
                    break
        failed_total += len(failures)
        mutations = ",".join(sorted(args.mutation)) or "none"
        schedule = _config(args, 0, profile).schedule
        print(f"profile {profile}, mutations {mutations}, schedule {schedule}: "
              f"{len(seeds)} seeds, {len(failures)} failed")
        print(f"  ops completed {totals['ops']}, abandoned {totals['abandoned']}, "
              f"commands acknowledged {totals['acked']}")
        print(f"  elections {totals['elections']} (leaders {totals['leaders']}), "
              f"reconfigurations {totals['reconfigs']}, crashes {totals['crashes']}, "
              f"partitions {totals['partitions']}, snapshot installs {totals['snapshots']}")
        checks = ", ".join(f"{name} {'ok' if by_checker[name] == 0 else f'{by_checker[name]} FAILED'}"
                           for name in CHECKERS)
        print(f"  checkers: {checks}; linearizability unknown (budget) {unknown}")
        print(f"  simulated time {totals['sim_us'] / 1e6:.1f}s, events {totals['events']}, "
              f"slowest recovery after the heal {totals['recovery_max_us'] / 1000:.0f}ms")
        if failures:
            print(f"  first failure replays with: {failures[0].replay_command()}")
    print(f"cpu time {_cpu_seconds() - cpu_start:.1f}s")
    return 1 if failed_total else 0


if __name__ == "__main__":
    sys.exit(main())
