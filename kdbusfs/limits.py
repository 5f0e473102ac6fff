"""Every limit of kdbusfs, with the reason for its value.

The kdbus values are the reference implementation's (ipc/kdbus/limits.h) so that clients hit the
same walls with the same errnos; kdbusfs-only values say why they exist.
"""

# Largest command or message struct (header plus items) a client may pass: bounds kernel copies.
CMD_MAX_SIZE = 32 * 1024
# Sum of PAYLOAD_VEC sizes in one message: bounds the single copy into the receiver's pool.
MSG_MAX_PAYLOAD_VEC_SIZE = 2 * 1024 * 1024
# PAYLOAD_MEMFD items per message: each pins a file until received.
MSG_MAX_MEMFD_ITEMS = 16
# fds per FDS item, and fds in flight per (receiver, sending user).
CONN_MAX_FDS_PER_USER = 16
# Bloom filters: at least one u64, at most one page, so a match is a bounded scan.
BUS_BLOOM_MIN_SIZE = 8
BUS_BLOOM_MAX_SIZE = 4096
# Well-known names, as in D-Bus.
NAME_MAX_LEN = 255
# Bus, endpoint and connection-description names: they become directory entries.
SYSNAME_MAX_LEN = 63
# Match rules per connection.
MATCH_MAX = 256
# Queued messages per (receiver, sending user): one chatty user cannot exhaust a queue.
CONN_MAX_MSGS = 256
# Name records (owned, queued, activator) per connection.
CONN_MAX_NAMES = 256
# Outstanding EXPECT_REPLY calls per caller.
CONN_MAX_REQUESTS_PENDING = 128
# Live connections per accounting user per domain.
USER_MAX_CONN = 1024
# Buses per real uid per domain.
USER_MAX_BUSES = 16

# The pool is mapped in pages; its size must be a positive multiple of this.
PAGE_SIZE = 4096
# kdbusfs: a pool is memory the daemon allocates for a client; refuse sizes no client needs
# (kdbus had no bound, but its pool was pageable shmem and ours is daemon memory).
POOL_MAX_SIZE = 1 << 30

# kdbusfs: a user hitting a limit is logged once per burst; a burst ends after this many seconds
# without a hit, so a client retrying in a loop makes one line, not thousands.
LIMIT_BURST_QUIET_S = 10.0
# A burst that goes on is reported again at most this often, with the number of hits since.
LIMIT_BURST_REPEAT_S = 60.0
# All bursts together log at most this many lines a window (many users, or one user's many uids,
# must not flood the log either); the next window starts with a count of what was held back.
LIMIT_LINES_PER_WINDOW = 30
LIMIT_WINDOW_S = 60.0

# kdbusfs: process trees launched with `kdbusfs run` one user may have supervised at once; each
# holds a listener and a reader thread in the daemon.
LISTENERS_PER_USER = 64

# kdbusfs: before mounting over an existing FUSE mount, its daemon gets this long to answer a
# statfs; one that does not is reported as stuck rather than waited for.
DAEMON_ANSWER_TIMEOUT_S = 10.0

# kdbusfs: daemons of other mounts one daemon takes notifications from at once (kdbusfs run with
# clients of several mounts); each holds a socket. Mounts on one machine are few, and one user runs
# a daemon or two: anyone may connect, so no user may take all the places.
FORWARDERS_MAX = 64
FORWARDERS_PER_USER = 4
# kdbusfs: how long a forwarder waits, once per connection, for the other daemon to say it took it
# (its inbox thread answers at once; a daemon that does not is treated as absent).
FORWARD_ACCEPT_TIMEOUT_MS = 1000
