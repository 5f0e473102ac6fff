/* Descriptors passed in messages reach the receiver: under `kdbusfs run` they are installed
 * (close-on-exec) and their numbers are in the FDS item and the memfd items; without it they read
 * -1 and RECV says INCOMPLETE_FDS.
 *
 * usage: passfd MOUNT_ROOT[,MOUNT_ROOT...] installed|plain [MESSAGES]
 *   prints "passfd: all checks passed" and, for the leak check, "fds before N after M". */
#define _GNU_SOURCE
#include <poll.h>
#include <pthread.h>
#include <sys/resource.h>

#include <dirent.h>

#include "msgutil.h"

#define MEMFD_SIZE (16 * 1024 * 1024)
#define SEALS (F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE)

static uint64_t msgbuf[4096];
static int installed;

/* kdbusfs's own command (the launcher's): hand the daemon a seccomp listener. */
struct kdbusfs_cmd_supervise {
	uint64_t size;
	uint64_t flags;
	int64_t listener_fd;
};
#define KDBUSFS_CMD_SUPERVISE _IOW(KDBUS_IOCTL_MAGIC, 0xF0, struct kdbusfs_cmd_supervise)

/* SUPERVISE refuses what is not a well-formed hand-over of a seccomp listener, on control only. */
static void check_supervise_refusals(const char *root, struct conn *a)
{
	char path[4096];
	int p[2];
	snprintf(path, sizeof(path), "%s/control", root);
	int control = open(path, O_RDWR | O_CLOEXEC);
	CHECK(control >= 0 && pipe2(p, O_CLOEXEC) == 0, "open control, pipe");
	struct kdbusfs_cmd_supervise cmd = { .size = 16, .listener_fd = p[0] };
	EXPECT_ERRNO(EINVAL, control, KDBUSFS_CMD_SUPERVISE, &cmd, "SUPERVISE with a wrong size");
	cmd.size = sizeof(cmd);
	cmd.flags = 1;
	EXPECT_ERRNO(EINVAL, control, KDBUSFS_CMD_SUPERVISE, &cmd, "SUPERVISE with unknown flags");
	cmd.flags = 0;
	EXPECT_ERRNO(EINVAL, control, KDBUSFS_CMD_SUPERVISE, &cmd, "SUPERVISE of a pipe");
	cmd.listener_fd = -1;
	EXPECT_ERRNO(EBADF, control, KDBUSFS_CMD_SUPERVISE, &cmd, "SUPERVISE of fd -1");
	cmd.listener_fd = p[0];
	EXPECT_ERRNO(ENOTTY, a->fd, KDBUSFS_CMD_SUPERVISE, &cmd, "SUPERVISE on a bus endpoint");
	close(control);
	close(p[0]);
	close(p[1]);
}

static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	int n = 0;
	CHECK(d != NULL, "opendir /proc/self/fd");
	while (readdir(d))
		n++;
	closedir(d);
	return n;
}

static int sealed_memfd(size_t size, uint8_t seed)
{
	int fd = memfd_create("passfd", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	CHECK(fd >= 0 && ftruncate(fd, size) == 0, "memfd of %zu bytes", size);
	uint8_t *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	CHECK(p != MAP_FAILED, "mmap memfd");
	for (size_t i = 0; i < size; i++)
		p[i] = (uint8_t)(i * 31 + seed);
	munmap(p, size);
	CHECK(fcntl(fd, F_ADD_SEALS, SEALS) == 0, "seal memfd");
	return fd;
}

static struct kdbus_item *next_item(struct kdbus_msg *m)
{
	return (void *)((uint8_t *)m + KDBUS_ALIGN8(m->size));
}

/* A message to `dst` with an FDS item of `n` fds (and no payload). */
static void send_fds(struct conn *from, uint64_t dst, const int *fds, int n)
{
	struct kdbus_msg *m = build_msg(msgbuf, dst, NULL, NULL, 0, 0, 1);
	struct kdbus_item *it = next_item(m);
	it->type = KDBUS_ITEM_FDS;
	it->size = KDBUS_ITEM_HEADER_SIZE + n * sizeof(int);
	memcpy(it->fds, fds, n * sizeof(int));
	m->size = KDBUS_ALIGN8(m->size) + it->size;
	CHECK(send_msg(from->fd, m, 0, NULL) == 0, "SEND with %d fds", n);
}

/* RECV the next message: its FDS numbers into `out`, the return flags into `flags`. */
static int recv_fds(struct conn *c, int *out, int max, uint64_t *flags, uint64_t recv_flags)
{
	struct kdbus_cmd_recv recv;
	CHECK(recv_msg(c, &recv, recv_flags, 0) == 0, "RECV");
	const struct kdbus_msg *m = (const void *)(c->pool + recv.msg.offset);
	const struct kdbus_item *it = find_item(m, KDBUS_ITEM_FDS);
	CHECK(it != NULL, "the message has its FDS item");
	int n = (it->size - KDBUS_ITEM_HEADER_SIZE) / sizeof(int);
	CHECK(n <= max, "at most %d fds", max);
	memcpy(out, it->fds, n * sizeof(int));
	*flags = recv.msg.return_flags;
	CHECK(free_slice(c->fd, recv.msg.offset) == 0, "FREE");
	return n;
}

static void expect_delivery(int fd, uint64_t flags, const char *what)
{
	if (installed) {
		CHECK(fd >= 0, "%s: a descriptor was installed (got %d)", what, fd);
		CHECK(!(flags & KDBUS_RECV_RETURN_INCOMPLETE_FDS), "%s: no INCOMPLETE_FDS", what);
		int fdflags = fcntl(fd, F_GETFD);
		CHECK(fdflags >= 0 && (fdflags & FD_CLOEXEC), "%s: close-on-exec, as kdbus sets it", what);
	} else {
		CHECK(fd == -1, "%s: -1 without the launcher (got %d)", what, fd);
		CHECK(flags & KDBUS_RECV_RETURN_INCOMPLETE_FDS, "%s: INCOMPLETE_FDS without the launcher", what);
	}
}

static void check_pipe(struct conn *a, struct conn *b)
{
	int p[2], got[4];
	uint64_t flags;
	CHECK(pipe2(p, O_CLOEXEC) == 0, "pipe2");
	send_fds(a, b->id, &p[0], 1);
	CHECK(write(p[1], "hello", 5) == 5, "write to the pipe");
	close(p[0]);
	close(p[1]);
	CHECK(recv_fds(b, got, 4, &flags, 0) == 1, "one fd");
	expect_delivery(got[0], flags, "pipe");
	if (installed) {
		char buf[8] = {0};
		CHECK(read(got[0], buf, sizeof(buf)) == 5 && memcmp(buf, "hello", 5) == 0,
		      "the received pipe reads what was written");
		CHECK(read(got[0], buf, sizeof(buf)) == 0, "and then EOF: the write end is closed everywhere");
		close(got[0]);
	}
	OK("a pipe passed in FDS %s", installed ? "is readable in the receiver" : "arrives as -1");
}

/* Two messages queued: the first RECV must publish its numbers although the queue is not empty. */
static void check_two_queued(struct conn *a, struct conn *b)
{
	int p[2], got[4];
	uint64_t flags;
	CHECK(pipe2(p, O_CLOEXEC) == 0, "pipe2");
	send_fds(a, b->id, &p[0], 1);
	send_fds(a, b->id, &p[0], 1);
	CHECK(write(p[1], "ab", 2) == 2, "write");
	for (int i = 0; i < 2; i++) {
		CHECK(recv_fds(b, got, 4, &flags, 0) == 1, "message %d of 2", i);
		expect_delivery(got[0], flags, "one of two queued messages");
		if (installed) {
			char c;
			CHECK(read(got[0], &c, 1) == 1 && c == "ab"[i], "the fd of message %d reads the pipe", i);
			close(got[0]);
		}
	}
	close(p[0]);
	close(p[1]);
	OK("two queued messages %s", installed ? "each publish their installed fd" : "arrive with -1");
}

static void check_memfd_in_fds(struct conn *a, struct conn *b)
{
	int fd = sealed_memfd(4096, 7), got[4];
	uint64_t flags;
	send_fds(a, b->id, &fd, 1);
	close(fd);
	CHECK(recv_fds(b, got, 4, &flags, 0) == 1, "one fd");
	expect_delivery(got[0], flags, "sealed memfd in FDS");
	if (installed) {
		uint8_t byte;
		CHECK(pread(got[0], &byte, 1, 100) == 1 && byte == (uint8_t)(100 * 31 + 7),
		      "the memfd's bytes are readable");
		CHECK((fcntl(got[0], F_GET_SEALS) & SEALS) == SEALS, "still sealed");
		close(got[0]);
	}
	OK("a sealed memfd passed in FDS %s", installed ? "is readable in the receiver" : "arrives as -1");
}

static void check_payload_memfd(struct conn *a, struct conn *b)
{
	int fd = sealed_memfd(MEMFD_SIZE, 3);
	struct kdbus_msg *m = build_msg(msgbuf, b->id, NULL, NULL, 0, 0, 2);
	struct kdbus_item *it = next_item(m);
	it->type = KDBUS_ITEM_PAYLOAD_MEMFD;
	it->size = KDBUS_ITEM_HEADER_SIZE + sizeof(struct kdbus_memfd);
	it->memfd.start = 0;
	it->memfd.size = MEMFD_SIZE;
	it->memfd.fd = fd;
	m->size = KDBUS_ALIGN8(m->size) + it->size;
	CHECK(send_msg(a->fd, m, 0, NULL) == 0, "SEND a 16 MiB PAYLOAD_MEMFD");
	close(fd);

	struct kdbus_cmd_recv recv;
	CHECK(recv_msg(b, &recv, 0, 0) == 0, "RECV the memfd message");
	const struct kdbus_msg *got = (const void *)(b->pool + recv.msg.offset);
	const struct kdbus_item *item = find_item(got, KDBUS_ITEM_PAYLOAD_MEMFD);
	CHECK(item && item->memfd.size == MEMFD_SIZE, "the PAYLOAD_MEMFD item arrives");
	int received = item->memfd.fd;
	expect_delivery(received, recv.msg.return_flags, "16 MiB PAYLOAD_MEMFD");
	if (installed) {
		const uint8_t *p = mmap(NULL, MEMFD_SIZE, PROT_READ, MAP_SHARED, received, 0);
		CHECK(p != MAP_FAILED, "the receiver maps the memfd read-only");
		size_t bad = 0;
		for (size_t i = 0; i < MEMFD_SIZE; i++)
			bad += p[i] != (uint8_t)(i * 31 + 3);
		CHECK(bad == 0, "%zu of %d bytes differ", bad, MEMFD_SIZE);
		CHECK(mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, received, 0) == MAP_FAILED,
		      "a writable mapping of the sealed memfd is refused");
		munmap((void *)p, MEMFD_SIZE);
		close(received);
	}
	CHECK(free_slice(b->fd, recv.msg.offset) == 0, "FREE");
	OK("a 16 MiB PAYLOAD_MEMFD %s", installed ? "is mapped and checked by the receiver" : "arrives as -1");
}

static void check_peek_and_drop(struct conn *a, struct conn *b)
{
	int p[2], got[4];
	uint64_t flags;
	CHECK(pipe2(p, O_CLOEXEC) == 0, "pipe2");
	int before = count_fds();
	send_fds(a, b->id, &p[0], 1);
	CHECK(recv_fds(b, got, 4, &flags, KDBUS_RECV_PEEK) == 1 && got[0] == -1, "PEEK installs nothing");
	CHECK(count_fds() == before, "no descriptor appeared on PEEK");
	CHECK(recv_fds(b, got, 4, &flags, 0) == 1, "RECV after PEEK");
	expect_delivery(got[0], flags, "RECV after PEEK");
	if (installed)
		close(got[0]);
	send_fds(a, b->id, &p[0], 1);
	struct kdbus_cmd_recv recv;
	CHECK(recv_msg(b, &recv, KDBUS_RECV_DROP, 0) == 0, "DROP");
	CHECK(count_fds() == before, "DROP installs nothing");
	close(p[0]);
	close(p[1]);
	OK("PEEK and DROP install nothing; RECV after PEEK does");
}

static void check_rlimit(struct conn *a, struct conn *b)
{
	int p[2], got[4];
	uint64_t flags;
	struct rlimit saved, low;
	CHECK(pipe2(p, O_CLOEXEC) == 0, "pipe2");
	int sent[3] = { p[0], p[0], p[0] };
	send_fds(a, b->id, sent, 3);
	CHECK(getrlimit(RLIMIT_NOFILE, &saved) == 0, "getrlimit");
	/* Room for exactly one more descriptor: the lowest free number is the only one below the
	 * limit (new descriptors take the lowest free number). */
	int lowest = dup(0);
	CHECK(lowest >= 0, "dup");
	close(lowest);
	low = saved;
	low.rlim_cur = lowest + 1;
	CHECK(setrlimit(RLIMIT_NOFILE, &low) == 0, "lower RLIMIT_NOFILE to %d", lowest + 1);
	int n = recv_fds(b, got, 4, &flags, 0);
	CHECK(setrlimit(RLIMIT_NOFILE, &saved) == 0, "restore RLIMIT_NOFILE");
	CHECK(n == 3, "the message is delivered with its three entries");
	int valid = 0, missing = 0;
	for (int i = 0; i < 3; i++) {
		if (got[i] >= 0) {
			valid++;
			close(got[i]);
		} else {
			missing++;
		}
	}
	CHECK(valid >= 1 && missing >= 1 && (flags & KDBUS_RECV_RETURN_INCOMPLETE_FDS),
	      "a full fd table: %d installed, %d left -1, INCOMPLETE_FDS %s", valid, missing,
	      flags & KDBUS_RECV_RETURN_INCOMPLETE_FDS ? "set" : "missing");
	close(p[0]);
	close(p[1]);
	OK("a receiver out of descriptors gets what fits, -1 for the rest and INCOMPLETE_FDS");
}

/* The callee: answer one call with a pipe's read end in FDS. */
static void *serve_call(void *arg)
{
	struct conn *b = arg;
	struct pollfd pfd = { .fd = b->fd, .events = POLLIN };
	CHECK(poll(&pfd, 1, 10000) == 1, "the call arrives");
	struct kdbus_cmd_recv recv;
	CHECK(recv_msg(b, &recv, 0, 0) == 0, "RECV the call");
	const struct kdbus_msg *call = (const void *)(b->pool + recv.msg.offset);
	uint64_t caller = call->src_id, cookie = call->cookie;
	CHECK(free_slice(b->fd, recv.msg.offset) == 0, "FREE the call");
	int p[2];
	CHECK(pipe2(p, O_CLOEXEC) == 0, "pipe2");
	CHECK(write(p[1], "reply", 5) == 5, "write");
	static uint64_t buf[512];
	struct kdbus_msg *m = build_msg(buf, caller, NULL, NULL, 0, 0, 99);
	m->cookie_reply = cookie;
	struct kdbus_item *it = next_item(m);
	it->type = KDBUS_ITEM_FDS;
	it->size = KDBUS_ITEM_HEADER_SIZE + sizeof(int);
	it->fds[0] = p[0];
	m->size = KDBUS_ALIGN8(m->size) + it->size;
	CHECK(send_msg(b->fd, m, 0, NULL) == 0, "SEND the reply with an fd");
	close(p[0]);
	close(p[1]);
	return NULL;
}

static void check_sync_reply(struct conn *a, struct conn *b)
{
	pthread_t callee;
	CHECK(pthread_create(&callee, NULL, serve_call, b) == 0, "pthread_create");
	struct kdbus_msg *m = build_msg(msgbuf, b->id, NULL, NULL, 0, KDBUS_MSG_EXPECT_REPLY, 98);
	m->timeout_ns = now_ns() + 10ULL * 1000000000ULL;
	struct kdbus_cmd_send cmd;
	CHECK(send_msg(a->fd, m, KDBUS_SEND_SYNC_REPLY, &cmd) == 0, "a synchronous call");
	pthread_join(callee, NULL);
	const struct kdbus_msg *reply = (const void *)(a->pool + cmd.reply.offset);
	const struct kdbus_item *it = find_item(reply, KDBUS_ITEM_FDS);
	CHECK(reply->cookie_reply == 98 && it != NULL, "the reply arrives with its FDS item");
	int fd = it->fds[0];
	expect_delivery(fd, cmd.reply.return_flags, "fd in a synchronous reply");
	if (installed) {
		char got[8] = {0};
		CHECK(read(fd, got, sizeof(got)) == 5 && memcmp(got, "reply", 5) == 0,
		      "the pipe in the reply reads what the callee wrote");
		close(fd);
	}
	CHECK(free_slice(a->fd, cmd.reply.offset) == 0, "FREE the reply");
	OK("an fd in a synchronous reply %s", installed ? "is installed in the caller" : "arrives as -1");
}

/* A broadcast passes memfds (never FDS): every receiver gets its own descriptor of it. */
static void check_broadcast_memfd(const char *root, const char *bus, struct conn *a, struct conn *b)
{
	struct conn c;
	hello(&c, root, bus, KDBUS_HELLO_ACCEPT_FD);
	struct kdbus_cmd_match match = { .size = sizeof(match), .cookie = 77 };
	CHECK(ioctl(b->fd, KDBUS_CMD_MATCH_ADD, &match) == 0 && ioctl(c.fd, KDBUS_CMD_MATCH_ADD, &match) == 0,
	      "MATCH_ADD");
	int fd = sealed_memfd(65536, 9);
	struct kdbus_msg *m = build_msg(msgbuf, KDBUS_DST_ID_BROADCAST, NULL, NULL, 0, KDBUS_MSG_SIGNAL, 3);
	struct kdbus_item *it = next_item(m);
	it->type = KDBUS_ITEM_PAYLOAD_MEMFD;
	it->size = KDBUS_ITEM_HEADER_SIZE + sizeof(struct kdbus_memfd);
	it->memfd.size = 65536;
	it->memfd.fd = fd;
	m->size = KDBUS_ALIGN8(m->size) + it->size;
	it = next_item(m);
	it->type = KDBUS_ITEM_BLOOM_FILTER;
	it->size = KDBUS_ITEM_HEADER_SIZE + 8 + 64;
	memset(it->bloom_filter.data, 0xff, 64);
	m->size = KDBUS_ALIGN8(m->size) + it->size;
	CHECK(send_msg(a->fd, m, 0, NULL) == 0, "broadcast a memfd");
	close(fd);
	struct conn *receivers[2] = { b, &c };
	for (int i = 0; i < 2; i++) {
		struct kdbus_cmd_recv recv;
		CHECK(recv_msg(receivers[i], &recv, 0, 0) == 0, "receiver %d: RECV the broadcast", i);
		const struct kdbus_msg *got = (const void *)(receivers[i]->pool + recv.msg.offset);
		const struct kdbus_item *item = find_item(got, KDBUS_ITEM_PAYLOAD_MEMFD);
		CHECK(item != NULL, "receiver %d: the memfd item", i);
		expect_delivery(item->memfd.fd, recv.msg.return_flags, "broadcast memfd");
		if (installed) {
			uint8_t byte;
			CHECK(pread(item->memfd.fd, &byte, 1, 4096) == 1 && byte == (uint8_t)(4096 * 31 + 9),
			      "receiver %d reads the memfd", i);
			close(item->memfd.fd);
		}
		free_slice(receivers[i]->fd, recv.msg.offset);
	}
	struct kdbus_cmd_match remove = { .size = sizeof(remove), .cookie = 77 };
	ioctl(b->fd, KDBUS_CMD_MATCH_REMOVE, &remove);
	close(c.fd);
	munmap(c.pool, POOL_SIZE);
	OK("a memfd broadcast to two receivers %s", installed ? "is installed in each" : "arrives as -1");
}

/* kdbus tears a connection down within close(): the next RECV of anyone sees its ID_REMOVE.
 * Under the launcher that RECV reaches the daemon by another way than the close's RELEASE, and
 * must still come second. */
static void check_close_then_recv(const char *root, const char *bus)
{
	struct conn w;
	hello(&w, root, bus, 0);
	uint64_t buf[64] = {0};
	struct kdbus_cmd_match *match = (void *)buf;
	struct kdbus_item *it = match->items;
	it->type = KDBUS_ITEM_ID_REMOVE;
	it->size = KDBUS_ITEM_HEADER_SIZE + sizeof(struct kdbus_notify_id_change);
	it->id_change.id = KDBUS_MATCH_ID_ANY;
	match->size = sizeof(*match) + KDBUS_ALIGN8(it->size);
	match->cookie = 1;
	CHECK(ioctl(w.fd, KDBUS_CMD_MATCH_ADD, match) == 0, "MATCH_ADD ID_REMOVE");
	for (int i = 0; i < 50; i++) {
		struct conn x;
		hello(&x, root, bus, 0);
		close(x.fd);
		munmap(x.pool, POOL_SIZE);
		struct kdbus_cmd_recv recv;
		CHECK(recv_msg(&w, &recv, 0, 0) == 0, "round %d: the RECV right after close() finds its ID_REMOVE", i);
		const struct kdbus_msg *m = (const void *)(w.pool + recv.msg.offset);
		CHECK(m->items[0].type == KDBUS_ITEM_ID_REMOVE && m->items[0].id_change.id == x.id,
		      "round %d: the ID_REMOVE of the connection just closed", i);
		free_slice(w.fd, recv.msg.offset);
	}
	close(w.fd);
	munmap(w.pool, POOL_SIZE);
	OK("50 times, the RECV right after a close() sees that connection's ID_REMOVE");
}

static void check_no_leak(struct conn *a, struct conn *b, int messages)
{
	int p[2], got[4];
	uint64_t flags;
	CHECK(pipe2(p, O_CLOEXEC) == 0, "pipe2");
	int before = count_fds();
	for (int i = 0; i < messages; i++) {
		send_fds(a, b->id, &p[0], 1);
		CHECK(recv_fds(b, got, 4, &flags, 0) == 1, "message %d", i);
		expect_delivery(got[0], flags, "leak check");
		if (installed)
			close(got[0]);
	}
	int after = count_fds();
	printf("fds before %d after %d\n", before, after);
	CHECK(after == before, "the receiver holds %d descriptors more after %d messages", after - before,
	      messages);
	close(p[0]);
	close(p[1]);
	OK("%d fd-carrying messages leave the receiver's fd table as it was", messages);
}

/* Every check on the buses of one mount. */
static void check_mount(const char *root, int messages)
{
	char bus[64], suffix[32];
	struct conn a, b;

	snprintf(suffix, sizeof(suffix), "passfd%d", getpid());
	int owner = make_bus(root, suffix, bus, sizeof(bus));
	hello(&a, root, bus, KDBUS_HELLO_ACCEPT_FD);
	hello(&b, root, bus, KDBUS_HELLO_ACCEPT_FD);
	check_supervise_refusals(root, &a);
	check_pipe(&a, &b);
	check_two_queued(&a, &b);
	check_memfd_in_fds(&a, &b);
	check_payload_memfd(&a, &b);
	check_peek_and_drop(&a, &b);
	check_sync_reply(&a, &b);
	check_close_then_recv(root, bus);
	check_broadcast_memfd(root, bus, &a, &b);
	if (installed)
		check_rlimit(&a, &b);
	check_no_leak(&a, &b, messages);
	munmap(a.pool, POOL_SIZE);
	munmap(b.pool, POOL_SIZE);
	close(a.fd);
	close(b.fd);
	close(owner);
}

int main(int argc, char **argv)
{
	CHECK(argc == 3 || argc == 4, "usage: passfd MOUNT_ROOT[,MOUNT_ROOT...] installed|plain [MESSAGES]");
	installed = strcmp(argv[2], "installed") == 0;
	int messages = argc == 4 ? atoi(argv[3]) : 1000;
	/* A process using the buses of several mounts (/sys/fs/kdbus and ~/kdbus, say), in turn. */
	for (char *root = strtok(argv[1], ","); root != NULL; root = strtok(NULL, ","))
		check_mount(root, messages);
	printf("passfd: all checks passed\n");
	return 0;
}
