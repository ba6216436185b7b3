"""Sans-IO Multi-Paxos with flexible quorums.

A pure state machine: messages, ticks and proposals in; what to persist, what to send and
what to apply out. Never imports asyncio, socket, time, threading or os, and never uses
the global functions of `random`.
"""
