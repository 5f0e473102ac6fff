/* kdbus: synchronous method calls by well-known name through a kdbusfs mount. The callee owns
 * "org.kdbusfs.Bench", receives each call in its pool, reads the payload and answers 8 bytes; the
 * caller uses KDBUS_SEND_SYNC_REPLY and finds the reply in its own pool.
 * usage: bench_kdbus MOUNT_ROOT PAYLOAD_BYTES SECONDS   -> "kdbusfs PAYLOAD CALLS_PER_SECOND" */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench_common.h"
#include "kdbus.h"

#define POOL (16 * 1024 * 1024)
#define NAME "org.kdbusfs.Bench"

struct conn {
	int fd;
	uint64_t id;
	uint8_t *pool;
};

static void die(const char *what)
{
	perror(what);
	exit(1);
}

static struct conn connect_bus(const char *root, const char *bus)
{
	char path[4096];
	struct conn c;
	struct kdbus_cmd_hello hello = { .size = sizeof(hello), .pool_size = POOL };
	snprintf(path, sizeof(path), "%s/%s/bus", root, bus);
	c.fd = open(path, O_RDWR | O_CLOEXEC);
	if (c.fd < 0 || ioctl(c.fd, KDBUS_CMD_HELLO, &hello) < 0)
		die("HELLO");
	c.id = hello.id;
	c.pool = mmap(NULL, POOL, PROT_READ, MAP_SHARED, c.fd, 0);
	if (c.pool == MAP_FAILED)
		die("mmap");
	struct kdbus_cmd_free f = { .size = sizeof(f), .offset = hello.offset };
	ioctl(c.fd, KDBUS_CMD_FREE, &f);
	return c;
}

static int make_bus(const char *root, char *bus, size_t len)
{
	uint64_t buf[64] = {0};
	struct kdbus_cmd *cmd = (void *)buf;
	struct kdbus_item *it = cmd->items;
	char path[4096];
	snprintf(bus, len, "%u-bench%d", geteuid(), getpid());
	it->type = KDBUS_ITEM_BLOOM_PARAMETER;
	it->size = KDBUS_ITEM_HEADER_SIZE + sizeof(struct kdbus_bloom_parameter);
	it->bloom_parameter.size = 64;
	it->bloom_parameter.n_hash = 1;
	it = KDBUS_ITEM_NEXT(it);
	it->type = KDBUS_ITEM_MAKE_NAME;
	it->size = KDBUS_ITEM_HEADER_SIZE + strlen(bus) + 1;
	strcpy(it->str, bus);
	it = KDBUS_ITEM_NEXT(it);
	cmd->size = (uint8_t *)it - (uint8_t *)cmd;
	snprintf(path, sizeof(path), "%s/control", root);
	int fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0 || ioctl(fd, KDBUS_CMD_BUS_MAKE, cmd) < 0)
		die("BUS_MAKE");
	return fd;
}

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
		it = r->items;
		it->type = KDBUS_ITEM_PAYLOAD_VEC;
		it->size = KDBUS_ITEM_HEADER_SIZE + sizeof(struct kdbus_vec);
		it->vec.address = (uintptr_t)&answer;
		it->vec.size = sizeof(answer);
		r->size = sizeof(*r) + it->size;
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

	int control = make_bus(root, bus, sizeof(bus));
	if (pipe(ready) < 0)
		die("pipe");
	pid_t child = fork();
	if (child == 0) {
		struct conn s = connect_bus(root, bus);
		serve(&s, ready[1]);
	}
	char r;
	if (read(ready[0], &r, 1) != 1)
		die("callee did not start");
	struct conn c = connect_bus(root, bus);

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
			it->type = KDBUS_ITEM_PAYLOAD_VEC;
			it->size = KDBUS_ITEM_HEADER_SIZE + sizeof(struct kdbus_vec);
			it->vec.address = (uintptr_t)data;
			it->vec.size = payload;
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
