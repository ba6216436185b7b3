"""Worker processes: one node served by several processes on one machine (`--workers N`).

The primary process owns everything a node owns (the log, LMDB's write transactions, the
catalog's changes, Time to Live, the streams, function and backup services). Worker
processes share its HTTP port and do the per-request work that needs no single owner: HTTP
parsing, SigV4 checks, JSON decoding and encoding, and the reads (GetItem, BatchGetItem,
Query, Scan, DescribeTable ...) straight from the LMDB environment, opened read-only. Every
other request is forwarded to the primary over a Unix socket (`channel`).

- `protocol`: the frames on that socket (sans-IO encoder and decoder, message shapes).
- `channel`: the asyncio ends of the socket, in the worker and in the primary.
- `readonly`: the worker's read-only view of the store and its catalog freshness check.
- `pool`: the primary's side: listening sockets, starting, watching and stopping workers.
- `worker`: a worker process (`python -m keeldb.workers.worker`).

See docs/performance.md, "Worker processes", for the design and the consistency argument.
"""
