/* kdbus: synchronous method calls by well-known name through a kdbusfs mount. The callee owns
 * "org.kdbusfs.Bench", receives each call in its pool, reads the payload and answers 8 bytes; the
 * caller uses KDBUS_SEND_SYNC_REPLY and finds the reply in its own pool.
 * With KIND, each call passes a descriptor instead of a payload: "fd" a pipe in FDS, "memfd" a
 * sealed memfd of PAYLOAD_BYTES as PAYLOAD_MEMFD, which the callee maps and reads if it was
 * installed (under `kdbusfs run`), and closes.
 * With "metadata" the payload is a vec as without KIND, but both connect as kdbus-era sd-bus did:
 * a description, every item allowed to be sent, and BENCH_METADATA_RECV asked for, so the call and
 * its reply each carry the sender's creds, pids, comms, names, description and a timestamp (the
 * first call and reply are checked; the caller owns no name, so the call carries none).
 * usage: bench_kdbus MOUNT_ROOT PAYLOAD_BYTES SECONDS [fd|memfd|metadata]
 *   -> "kdbusfs PAYLOAD CALLS_PER_SECOND" */
#define _GNU_SOURCE
#include <poll.h>
#include <sys/wait.h>

#include "bench_fdpass_common.h"
#include "kdbus_client.h"

#define POOL (16 * 1024 * 1024)
#define NAME "org.kdbusfs.Bench"

static void acquire(struct conn *c)
{
	uint64_t buf[16] = {0};
	struct kdbus_cmd *cmd = (void *)buf;
	struct kdbus_item *it = (void *)((uint8_t *)cmd + sizeof(*cmd));
	it->type = KDBUS_ITEM_NAME;
	it->size = KDBUS_ITEM_HEADER_SIZE + sizeof(NAME);
	memcpy((uint8_t *)it + KDBUS_ITEM_HEADER_SIZE, NAME, sizeof(NAME));
	cmd->size = sizeof(*cmd) + KDBUS_ALIGN8(it->size);
	if (ioctl(c->fd, KDBUS_CMD_NAME_ACQUIRE, cmd) < 0)
		die("NAME_ACQUIRE");
}

/* A message carries the metadata items `want` (what was asked for), so that the figure is of what
 * it claims to be. */
static void expect_metadata(const struct kdbus_msg *m, unsigned want)
{
	const struct kdbus_item *it;
	unsigned found = 0;
	KDBUS_FOREACH(it, m->items, m->size - offsetof(struct kdbus_msg, items))
		if (it->type >= KDBUS_ITEM_TIMESTAMP && it->type <= KDBUS_ITEM_CONN_DESCRIPTION)
			found |= 1u << (it->type - KDBUS_ITEM_TIMESTAMP);
	if (found != want) {
		fprintf(stderr, "metadata items %#x, expected %#x\n", found, want);
		exit(1);
	}
}

static void serve(struct conn *c, int ready, size_t memfd_size, int check_metadata)
{
	uint64_t msgbuf[64];
	uint64_t answer;
	struct kdbus_msg *r = (void *)msgbuf;
	struct kdbus_item *it;
	struct pollfd p = { .fd = c->fd, .events = POLLIN };

	acquire(c);
	if (write(ready, "r", 1) != 1)
		die("ready");
	for (;;) {
		struct kdbus_cmd_recv recv = { .size = sizeof(recv) };
		if (ioctl(c->fd, KDBUS_CMD_RECV, &recv) < 0) {
			if (errno != EAGAIN)
				die("RECV");
			if (poll(&p, 1, -1) < 0)
				die("poll");
			continue;
		}
		struct kdbus_msg *m = (void *)(c->pool + recv.msg.offset);
		if (m->cookie == 0)
			_exit(0);
		if (m->cookie == 1 && check_metadata)
			expect_metadata(m, BENCH_METADATA_RECV & ~KDBUS_ATTACH_NAMES);
		answer = 0;
		KDBUS_FOREACH(it, m->items, m->size - offsetof(struct kdbus_msg, items)) {
			if (it->type == KDBUS_ITEM_PAYLOAD_OFF && it->vec.offset != ~0ULL)
				answer += touch((uint8_t *)m + it->vec.offset, it->vec.size);
			else if (it->type == KDBUS_ITEM_FDS)
				answer += bench_consume(it->fds[0], 0);
			else if (it->type == KDBUS_ITEM_PAYLOAD_MEMFD)
				answer += bench_consume(it->memfd.fd, memfd_size);
		}
		memset(msgbuf, 0, sizeof(msgbuf));
		r->payload_type = KDBUS_PAYLOAD_DBUS;
		r->dst_id = m->src_id;
		r->cookie_reply = m->cookie;
		r->cookie = m->cookie;
		it = put_vec(r->items, &answer, sizeof(answer));
		r->size = (uint8_t *)it - (uint8_t *)r;
		struct kdbus_cmd_free f = { .size = sizeof(f), .offset = recv.msg.offset };
		ioctl(c->fd, KDBUS_CMD_FREE, &f);
		struct kdbus_cmd_send send = { .size = sizeof(send), .msg_address = (uintptr_t)r };
		if (ioctl(c->fd, KDBUS_CMD_SEND, &send) < 0)
			die("SEND reply");
	}
}

int main(int argc, char **argv)
{
	const char *root = argv[1];
	size_t payload = strtoull(argv[2], NULL, 0);
	double seconds = atof(argv[3]);
	const char *kind = argc > 4 ? argv[4] : NULL;
	int metadata = kind && strcmp(kind, "metadata") == 0;
	if (metadata)
		kind = NULL;
	int memfd = kind && strcmp(kind, "memfd") == 0;
	int fd = kind ? bench_descriptor(kind, payload) : -1;
	uint64_t hello_flags = kind ? KDBUS_HELLO_ACCEPT_FD : 0;
	struct identity callee = { 0, 0, NULL }, caller = { 0, 0, NULL };
	if (metadata) {
		callee = (struct identity){ _KDBUS_ATTACH_ANY, BENCH_METADATA_RECV, "bench-callee" };
		caller = (struct identity){ _KDBUS_ATTACH_ANY, BENCH_METADATA_RECV, "bench-caller" };
	}
	char bus[64];
	int ready[2];
	uint8_t *data = calloc(1, payload + 8);
	uint64_t msgbuf[64];
	struct kdbus_msg *m = (void *)msgbuf;
	struct kdbus_item *it;

	int control = make_bus(root, "bench", bus, sizeof(bus));
	if (pipe(ready) < 0)
		die("pipe");
	pid_t child = fork();
	if (child == 0) {
		struct conn s = connect_bus_as(root, bus, POOL, 1, hello_flags, callee);
		serve(&s, ready[1], memfd ? payload : 0, metadata);
	}
	char r;
	if (read(ready[0], &r, 1) != 1)
		die("callee did not start");
	struct conn c = connect_bus_as(root, bus, POOL, 1, hello_flags, caller);

	long n = 0;
	uint64_t cookie = 1;
	double start = bench_now(), end = start + seconds;
	do {
		for (int i = 0; i < 20; i++, n++) {
			memset(msgbuf, 0, sizeof(msgbuf));
			m->flags = KDBUS_MSG_EXPECT_REPLY;
			m->payload_type = KDBUS_PAYLOAD_DBUS;
			m->cookie = cookie++;
			m->timeout_ns = bench_now_ns() + 5000000000ULL;
			it = m->items;
			it->type = KDBUS_ITEM_DST_NAME;
			it->size = KDBUS_ITEM_HEADER_SIZE + sizeof(NAME);
			memcpy(it->str, NAME, sizeof(NAME));
			it = KDBUS_ITEM_NEXT(it);
			if (memfd) {
				it->type = KDBUS_ITEM_PAYLOAD_MEMFD;
				it->size = KDBUS_ITEM_HEADER_SIZE + sizeof(struct kdbus_memfd);
				it->memfd.start = 0;
				it->memfd.size = payload;
				it->memfd.fd = fd;
				it = KDBUS_ITEM_NEXT(it);
			} else if (kind) {
				it->type = KDBUS_ITEM_FDS;
				it->size = KDBUS_ITEM_HEADER_SIZE + sizeof(int);
				it->fds[0] = fd;
				it = KDBUS_ITEM_NEXT(it);
			} else {
				it = put_vec(it, data, payload);
			}
			m->size = (uint8_t *)it - (uint8_t *)m;
			struct kdbus_cmd_send send = { .size = sizeof(send), .flags = KDBUS_SEND_SYNC_REPLY,
						       .msg_address = (uintptr_t)m };
			if (ioctl(c.fd, KDBUS_CMD_SEND, &send) < 0)
				die("SEND call");
			if (cookie == 2 && metadata)
				expect_metadata((void *)(c.pool + send.reply.offset), BENCH_METADATA_RECV);
			struct kdbus_cmd_free f = { .size = sizeof(f), .offset = send.reply.offset };
			ioctl(c.fd, KDBUS_CMD_FREE, &f);
		}
	} while (bench_now() < end);
	report("kdbusfs", payload, n, bench_now() - start);

	memset(msgbuf, 0, sizeof(msgbuf));
	m->payload_type = KDBUS_PAYLOAD_DBUS;
	m->dst_id = 0;
	it = m->items;
	it->type = KDBUS_ITEM_DST_NAME;
	it->size = KDBUS_ITEM_HEADER_SIZE + sizeof(NAME);
	memcpy(it->str, NAME, sizeof(NAME));
	m->size = sizeof(*m) + KDBUS_ALIGN8(it->size);
	struct kdbus_cmd_send stop = { .size = sizeof(stop), .msg_address = (uintptr_t)m };
	ioctl(c.fd, KDBUS_CMD_SEND, &stop);
	waitpid(child, NULL, 0);
	close(control);
	return 0;
}
