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

# kdbusfs: how long the serving loop keeps looking for the next FUSE request before it sleeps in
# epoll, when the daemon may run on more than one CPU (mount option spin_us). A small call is a
# chain of requests tens of microseconds apart; a daemon asleep for each gap pays a wake-up on
# another CPU in every one of them, more than its whole work for the request (unpinned 8-byte
# calls 2.1x, one-subscriber broadcasts 1.8x with 30 us, measured; 10 us gave 1.9x, 100 us no more
# than 30). Never when it may run on one CPU only: there the spin would delay the very client it
# waits for. A spin that finds nothing is not repeated until a request comes within a spin's reach
# of a sleep: requests more than two spins apart cost one wasted spin a burst, not one each (a
# steady stream with gaps between one and two spins still pays one a gap).
SPIN_BEFORE_SLEEP_US = 30

# kdbusfs: /proc files of sending tasks kept open between their messages (host/proc.py TaskFiles).
# kdbus takes a sender's creds, pids and comms from the sending thread at every SEND, so each
# message reads them again; a file kept open spares the path walk and open/close each time. Each
# is a descriptor of the daemon's: past this many the least recently read is closed.
TASK_FILES_OPEN = 256

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

# kdbusfs classic D-Bus endpoint (kdbusfs/classic/). The authentication values are dbus-daemon's,
# so that classic clients meet the same walls: a line of at most 16 KiB, six rejections.
CLASSIC_AUTH_LINE_MAX = 16 * 1024
CLASSIC_AUTH_MAX_REJECTIONS = 6
# A classic message (fixed header, fields, body): dbus-daemon's max_message_size as it ships (its
# built-in default, which system.conf keeps; session.conf raises it to 1 GB, more than the daemon
# should hold per client). A client announcing a larger one is closed before the daemon buffers it,
# as dbus-daemon closes it; a native message past it is not delivered to classic clients.
CLASSIC_MESSAGE_MAX = 32 * 1024 * 1024
# Payload parts (a classic message's GVariant body) of this size or more travel in a sealed memfd
# of their own instead of a PAYLOAD_VEC (whose sum kdbus caps at MSG_MAX_PAYLOAD_VEC_SIZE): sd-bus's
# threshold on kdbus, below which copying is cheaper than making, sealing and mapping a memfd.
CLASSIC_MEMFD_MIN_SIZE = 512 * 1024
# Bytes of such memfds one classic client's messages may hold at once (made by the daemon, they are
# its memory until received; kdbus charged a sender's memfds to the sender): dbus-daemon's
# max_incoming_bytes as it ships, the bytes it holds of one connection's undelivered messages.
# Past it a call gets LimitsExceeded, as it would from kdbus for a full pool.
CLASSIC_MEMFD_BYTES_MAX = 133169152
# Array elements of one message the endpoint decodes one by one (arrays of bytes and of numbers are
# taken in bulk and do not count). Each costs the serving thread, which serves every client of the
# mount, a few microseconds per direction (variants the most): 60000 variants took it 0.4 s each way
# in at most 0.2 s at a stretch (a loaded 2-CPU VM), strings a third of that; property dicts and
# object lists have thousands. Past it a classic client is closed (as dbus-daemon closes one past
# its limits) and a native message is not delivered to classic clients.
CLASSIC_ARRAY_ELEMENTS_MAX = 64 * 1024
# Descriptors one classic message may carry: kdbus passes at most this many per message.
CLASSIC_FDS_PER_MESSAGE = CONN_MAX_FDS_PER_USER
# Bytes written to a classic client that it has not read yet: past this the endpoint stops
# receiving for it (its messages wait in its pool, where the bus's quotas apply to the senders)
# and stops reading its socket (what it sends would only add replies it does not read).
CLASSIC_OUTGOING_MAX = 4 * 1024 * 1024
# Both resume once the client has read its backlog down to this: well below the maximum, so that
# a client reading slowly costs one epoll change per few MiB, not one per message it reads.
CLASSIC_OUTGOING_RESUME = CLASSIC_OUTGOING_MAX // 2
# Connections that have not said Hello yet, at once (dbus-daemon's max_incomplete_connections);
# each costs a socket and a buffer. Each gets the timeout (its auth_timeout), enforced by a timer.
CLASSIC_UNAUTHENTICATED_MAX = 64
CLASSIC_AUTH_TIMEOUT_S = 30.0
# When all those places are taken by connections younger than this, the next one waits in the
# socket's backlog (for a place, at most this long) rather than close the oldest mid-exchange: a
# burst of clients connecting at once all gets in, as with dbus-daemon, and a user holding every
# place with idle connections still loses its oldest to a newcomer within this time.
CLASSIC_ADMISSION_GRACE_S = 1.0
# Connections the kernel queues on the classic socket until the daemon accepts them (capped by
# net.core.somaxconn); past it connect(2) blocks or fails with EAGAIN. The serving thread accepts
# at once, but a boot's burst of clients arrives while it serves other work.
CLASSIC_LISTEN_BACKLOG = 128
# After accept(2) failed for want of descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM), the
# endpoint stops watching its socket (it stays readable: watching it would spin) until a client
# closes or this much time has passed, whichever is first.
CLASSIC_ACCEPT_RETRY_S = 0.5
# kdbus needs a deadline (absolute, CLOCK_MONOTONIC ns) for every call expecting a reply; dbus-daemon
# times no call out (its reply_timeout is -1, "never", and neither shipped config sets it): the
# caller's own timeout decides (libdbus's 25 s default, polkit's interactive checks wait minutes).
# So every classic call gets the largest deadline a signed 64-bit reader still takes as positive:
# 292 years of uptime, never reached, and safe for receivers that keep nanoseconds in an int64.
CLASSIC_CALL_DEADLINE_NS = (1 << 63) - 1
# A classic client's pool: room for its queued messages (its own quota in kdbus terms).
CLASSIC_POOL_SIZE = 16 * 1024 * 1024
# Bytes a classic signal's bloom filter may hash (each digest finish counted as 24): SipHash runs in
# Python at ~4 MB/s on the serving thread, which also serves every FUSE client, so this bounds a
# signal to ~15 ms of it; ordinary signals (a few short strings and their prefixes) take a few KiB.
# A signal past it carries an all-ones filter: every match selects it and the receivers' own rules
# decide, as they re-check every signal the bloom lets through.
CLASSIC_BLOOM_HASH_BUDGET = 64 * 1024
# Descriptors held in a classic client's outgoing buffer (received for it, not yet written): they
# count against the daemon's own RLIMIT_NOFILE, shared with every client and the FUSE session, and a
# client that does not read would pin them without end (kdbus's per-user quota only counts those
# still in its pool). Past this the endpoint receives no more for it (`ClassicClient.outgoing_fds`):
# its messages wait in its pool, where CONN_MAX_FDS_PER_USER holds their senders back.
CLASSIC_OUTGOING_FDS_MAX = 4 * CLASSIC_FDS_PER_MESSAGE
# The endpoint also stops reading such a client's socket until it is down to this (as for bytes,
# CLASSIC_OUTGOING_RESUME): each message it sends may be answered with descriptors it must take.
CLASSIC_OUTGOING_FDS_RESUME = CLASSIC_OUTGOING_FDS_MAX // 2
# Match rules (AddMatch) one classic client may hold: dbus-daemon's default, the system bus's value
# (the session bus's configuration raises it to 50000). Each rule costs memory and a test of every
# signal delivered to the client; the kdbus entries behind them are shared and widened to fit
# MATCH_MAX (subscriptions.py). Past it AddMatch answers LimitsExceeded, as dbus-daemon does.
CLASSIC_MATCH_RULES_MAX = 512
