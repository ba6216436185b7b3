"""Durable local state: the write-ahead log, the LMDB item store, checkpoints, recovery.

Never interprets redo records: it stores and replays opaque bytes in log order.
"""
