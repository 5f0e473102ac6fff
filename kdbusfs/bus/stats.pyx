# cython: language_level=3, annotation_typing=False
"""Statistics of a bus and its connections (kdbus kept none; a file system can show them).

Counters are plain integers bumped where the event happens (a SEND, a RECV, a message a receiver
had no room for); everything else (queues, pools, quotas, names, matches, pending replies) is read
from the model when someone asks. `snapshot()` is that answer: a JSON-ready dict, served read-only
as the `stats` file of each bus directory (kdbusfs(7)), which `kdbusctl stats` renders. Taking it
reads the model only, so asking never changes, blocks or slows the bus.
"""

from __future__ import annotations

# The version of the snapshot's layout; bumped when a field changes meaning or goes.
FORMAT = 1


cdef class Counters:
    """What happened to one connection (or, summed, a bus) since it was made (fields in
    stats.pxd). Compiled: a SEND and a RECV each count, typed, with no Python frame."""

    cpdef sent(self, unsigned long long payload):
        self.messages_sent += 1
        self.bytes_sent += payload

    cpdef received(self, unsigned long long payload):
        self.messages_received += 1
        self.bytes_received += payload

    def add(self, Counters other not None):
        self.messages_sent += other.messages_sent
        self.bytes_sent += other.bytes_sent
        self.messages_received += other.messages_received
        self.bytes_received += other.bytes_received
        self.messages_dropped += other.messages_dropped


def _connection(conn):
    creds = conn.snapshot.creds()
    pool = conn.pool
    counters = conn.stats
    return {
        "id": conn.id,
        "kind": conn.kind.value,
        "description": conn.description,
        "uid": conn.opener.uid,
        "pid": creds.pid,
        "comm": conn.snapshot.pid_comm(),
        # Names it holds (as primary owner or activator); queued claims are not its names yet.
        "names": [record.entry.name for record in conn.bus.names.owned_names(conn)],
        "match_entries": len(conn.matches.entries) if conn.matches is not None else 0,
        "queued_messages": len(conn.queue),
        "pool_size": pool.size,
        # Incoming messages may take half of the pool (the other half is for what RECV and queries
        # hand over); `pool_queued_bytes` is that half's use.
        "pool_queued_bytes": pool.accounted_size,
        "pool_queue_limit": pool.size // 2,
        "pending_replies": len(conn.trackers),
        "awaited_replies": len(conn.awaited),
        "messages_sent": counters.messages_sent,
        "bytes_sent": counters.bytes_sent,
        "messages_received": counters.messages_received,
        "bytes_received": counters.bytes_received,
        "messages_dropped": counters.messages_dropped,
        "quota_by_sender": {
            str(key): {"bytes": quota.memory, "messages": quota.msgs, "fds": quota.fds}
            for key, quota in conn.quota.users.items() if quota.msgs or quota.memory or quota.fds
        },
    }


def snapshot(bus):
    """The bus's statistics now, with one record per live connection."""
    connections = [_connection(conn) for conn in bus.connections.values()]
    totals = Counters()
    totals.add(bus.gone_counters)
    for conn in bus.connections.values():
        totals.add(conn.stats)
    return {
        "format": FORMAT,
        "bus": {
            "name": bus.name,
            "id": bus.id,
            "connections": len(connections),
            "names": sum(len(conn["names"]) for conn in connections),
            "kernel_notifications": bus.kernel_notifications,
            # Every connection the bus has had, the departed ones included.
            "messages_sent": totals.messages_sent,
            "bytes_sent": totals.bytes_sent,
            "messages_received": totals.messages_received,
            "bytes_received": totals.bytes_received,
            "messages_dropped": totals.messages_dropped,
        },
        "connections": connections,
    }
