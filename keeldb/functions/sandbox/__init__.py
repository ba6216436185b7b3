"""Function sandboxes: a zygote that forks warm instances, each confined by every isolation
mechanism the host offers (namespaces, pivot_root, cgroups, rlimits, Landlock, seccomp), and
the pool that assigns, invokes, freezes and reaps them. See docs/sandbox.md.
"""

from keeldb.functions.sandbox.pool import (
    FunctionSpec,
    InvokeResult,
    SandboxBusy,
    SandboxCrashed,
    SandboxPool,
    SandboxTimeout,
)

__all__ = [
    "FunctionSpec",
    "InvokeResult",
    "SandboxBusy",
    "SandboxCrashed",
    "SandboxPool",
    "SandboxTimeout",
]
