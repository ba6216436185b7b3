"""The table state machine: validates requests, evaluates them against the latest view,
turns them into redo records, and applies committed redo records to a `Store`.

Pure over the `Store` and `ReplicatedLog` protocols of `keeldb.storage`: never opens files
or sockets itself.
"""
