"""Transaction isolation tooling that is independent of the engine: the history checker."""
