/* kdbus: synchronous method calls by well-known name through a kdbusfs mount. The callee owns
 * "org.kdbusfs.Bench", receives each call in its pool, reads the payload and answers 8 bytes; the
 * caller uses KDBUS_SEND_SYNC_REPLY and finds the reply in its own pool.
 * usage: bench_kdbus MOUNT_ROOT PAYLOAD_BYTES SECONDS   -> "kdbusfs PAYLOAD CALLS_PER_SECOND" */
#include <poll.h>
#include <sys/wait.h>

#include "bench_common.h"
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

static void serve(struct conn *c, int ready)
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
		answer = 0;
		KDBUS_FOREACH(it, m->items, m->size - offsetof(struct kdbus_msg, items))
			if (it->type == KDBUS_ITEM_PAYLOAD_OFF && it->vec.offset != ~0ULL)
				answer += touch((uint8_t *)m + it->vec.offset, it->vec.size);
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
		struct conn s = connect_bus(root, bus, POOL, 1);
		serve(&s, ready[1]);
	}
	char r;
	if (read(ready[0], &r, 1) != 1)
		die("callee did not start");
	struct conn c = connect_bus(root, bus, POOL, 1);

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
			it = put_vec(KDBUS_ITEM_NEXT(it), data, payload);
			m->size = (uint8_t *)it - (uint8_t *)m;
			struct kdbus_cmd_send send = { .size = sizeof(send), .flags = KDBUS_SEND_SYNC_REPLY,
						       .msg_address = (uintptr_t)m };
			if (ioctl(c.fd, KDBUS_CMD_SEND, &send) < 0)
				die("SEND call");
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
