/* kdbus: synchronous method calls that each pass a descriptor (a pipe in FDS, or a sealed memfd
 * as PAYLOAD_MEMFD), through a kdbusfs mount. The callee receives the descriptor (installed when
 * both run under `kdbusfs run`, -1 otherwise), reads a memfd, closes it and answers 8 bytes.
 * usage: bench_fdpass_kdbus MOUNT_ROOT fd|memfd SIZE SECONDS  -> "kdbusfs SIZE CALLS_PER_SECOND" */
#define _GNU_SOURCE
#include <poll.h>
#include <sys/wait.h>

#include "bench_fdpass_common.h"
#include "kdbus_client.h"

#define POOL (16 * 1024 * 1024)

static void serve(struct conn *c, int ready, size_t size)
{
	uint64_t msgbuf[64];
	uint64_t answer;
	struct kdbus_msg *r = (void *)msgbuf;
	struct kdbus_item *it;
	struct pollfd p = { .fd = c->fd, .events = POLLIN };

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
		answer = 0;
		KDBUS_FOREACH(it, m->items, m->size - offsetof(struct kdbus_msg, items)) {
			if (it->type == KDBUS_ITEM_FDS)
				answer += bench_consume(it->fds[0], 0);
			else if (it->type == KDBUS_ITEM_PAYLOAD_MEMFD)
				answer += bench_consume(it->memfd.fd, size);
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
	if (argc != 5)
		die("usage: bench_fdpass_kdbus MOUNT_ROOT fd|memfd SIZE SECONDS");
	const char *root = argv[1], *kind = argv[2];
	size_t size = strtoull(argv[3], NULL, 0);
	double seconds = atof(argv[4]);
	int memfd = strcmp(kind, "memfd") == 0;
	char bus[64];
	int ready[2];
	uint64_t msgbuf[64];
	struct kdbus_msg *m = (void *)msgbuf;
	struct kdbus_item *it;

	int control = make_bus(root, "fdpass", bus, sizeof(bus));
	int fd = bench_descriptor(kind, size);
	if (pipe(ready) < 0)
		die("pipe");
	pid_t child = fork();
	if (child == 0) {
		struct conn s = connect_bus_with(root, bus, POOL, 1, KDBUS_HELLO_ACCEPT_FD);
		serve(&s, ready[1], memfd ? size : 0);
	}
	char r;
	if (read(ready[0], &r, 1) != 1)
		die("callee did not start");
	struct conn c = connect_bus_with(root, bus, POOL, 1, KDBUS_HELLO_ACCEPT_FD);
	/* The callee connected just before us; ids count up bus-wide. */
	uint64_t callee = c.id - 1;

	long n = 0;
	uint64_t cookie = 1;
	double start = bench_now(), end = start + seconds;
	do {
		for (int i = 0; i < 20; i++, n++) {
			memset(msgbuf, 0, sizeof(msgbuf));
			m->flags = KDBUS_MSG_EXPECT_REPLY;
			m->payload_type = KDBUS_PAYLOAD_DBUS;
			m->dst_id = callee;
			m->cookie = cookie++;
			m->timeout_ns = bench_now_ns() + 5000000000ULL;
			it = m->items;
			if (memfd) {
				it->type = KDBUS_ITEM_PAYLOAD_MEMFD;
				it->size = KDBUS_ITEM_HEADER_SIZE + sizeof(struct kdbus_memfd);
				it->memfd.size = size;
				it->memfd.fd = fd;
			} else {
				it->type = KDBUS_ITEM_FDS;
				it->size = KDBUS_ITEM_HEADER_SIZE + sizeof(int);
				it->fds[0] = fd;
			}
			it = KDBUS_ITEM_NEXT(it);
			m->size = (uint8_t *)it - (uint8_t *)m;
			struct kdbus_cmd_send send = { .size = sizeof(send), .flags = KDBUS_SEND_SYNC_REPLY,
						       .msg_address = (uintptr_t)m };
			if (ioctl(c.fd, KDBUS_CMD_SEND, &send) < 0)
				die("SEND call");
			struct kdbus_cmd_free f = { .size = sizeof(f), .offset = send.reply.offset };
			ioctl(c.fd, KDBUS_CMD_FREE, &f);
		}
	} while (bench_now() < end);
	report("kdbusfs", size, n, bench_now() - start);

	memset(msgbuf, 0, sizeof(msgbuf));
	m->payload_type = KDBUS_PAYLOAD_DBUS;
	m->dst_id = callee;
	m->size = sizeof(*m);
	struct kdbus_cmd_send stop = { .size = sizeof(stop), .msg_address = (uintptr_t)m };
	ioctl(c.fd, KDBUS_CMD_SEND, &stop);
	waitpid(child, NULL, 0);
	close(control);
	return 0;
}
