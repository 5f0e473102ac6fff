/* A native kdbus peer for large D-Bus bodies, driven line by line from stdin; run it under
 * `kdbusfs run` so that the memfds of the messages it receives are installed in it.
 * usage: bigpeer MOUNT_ROOT BUS NAME OUT_FILE
 * Owns NAME, prints "id N", then answers:
 *   recv MS   the next message within MS ms: its whole payload (vectors and memfds, in item order)
 *             is written to OUT_FILE, and the line is
 *             "msg SRC COOKIE FLAGS PARTS" (PARTS: "vec:SIZE" and "memfd:SIZE" joined by ",")
 *             or "timeout"; the message's first memfd is kept for "reply"
 *   reply DST COOKIE_REPLY COOKIE HEAD_HEX TAIL_HEX
 *             a reply whose payload is HEAD, the kept memfd, TAIL (as sd-bus laid a large body
 *             out)                                                      -> "ok" / "errno N"
 *   quit */
#include <poll.h>

#include "msgutil.h"

static char line[1 << 16];
static uint8_t head[4096], tail[4096];
static uint64_t msgbuf[1024];

static void write_all(int fd, const void *data, size_t size)
{
	const uint8_t *p = data;
	while (size) {
		ssize_t n = write(fd, p, size);
		CHECK(n > 0, "write");
		p += n;
		size -= (size_t)n;
	}
}

static int kept_memfd = -1;
static uint64_t kept_size;

static void do_recv(struct conn *c, const char *out_path, int ms)
{
	struct kdbus_cmd_recv recv;
	const struct kdbus_msg *m;
	const struct kdbus_item *it;
	int out;
	const char *sep = "";

	if (!recv_within(c, &recv, ms)) {
		printf("timeout\n");
		return;
	}
	m = (const void *)(c->pool + recv.msg.offset);
	out = open(out_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	CHECK(out >= 0, "open %s", out_path);
	printf("msg %llu %llu %llu ", (unsigned long long)m->src_id, (unsigned long long)m->cookie,
	       (unsigned long long)m->flags);
	KDBUS_FOREACH(it, m->items, m->size - offsetof(struct kdbus_msg, items)) {
		if (it->type == KDBUS_ITEM_PAYLOAD_OFF) {
			CHECK(it->vec.offset != ~0ULL, "a vector without data");
			write_all(out, (const uint8_t *)m + it->vec.offset, it->vec.size);
			printf("%svec:%llu", sep, (unsigned long long)it->vec.size);
		} else if (it->type == KDBUS_ITEM_PAYLOAD_MEMFD) {
			const struct kdbus_memfd *memfd = &it->memfd;
			uint8_t *data;
			CHECK(memfd->fd >= 0, "memfd not installed (not under kdbusfs run?)");
			data = mmap(NULL, memfd->start + memfd->size, PROT_READ, MAP_SHARED, memfd->fd, 0);
			CHECK(data != MAP_FAILED, "mmap memfd");
			write_all(out, data + memfd->start, memfd->size);
			munmap(data, memfd->start + memfd->size);
			printf("%smemfd:%llu", sep, (unsigned long long)memfd->size);
			if (kept_memfd < 0 && memfd->start == 0) {
				kept_memfd = memfd->fd;
				kept_size = memfd->size;
			} else {
				close(memfd->fd);
			}
		} else {
			continue;
		}
		sep = ",";
	}
	close(out);
	printf("\n");
	CHECK(free_slice(c->fd, recv.msg.offset) == 0, "FREE");
}

static struct kdbus_item *add_vec(struct kdbus_item *it, const void *data, size_t size)
{
	it->type = KDBUS_ITEM_PAYLOAD_VEC;
	it->size = KDBUS_ITEM_HEADER_SIZE + sizeof(struct kdbus_vec);
	it->vec.address = (uintptr_t)data;
	it->vec.size = size;
	return KDBUS_ITEM_NEXT(it);
}

static void do_reply(struct conn *c, char *args)
{
	char *dst_s = strtok(args, " \n"), *reply_s = strtok(NULL, " \n"), *cookie_s = strtok(NULL, " \n");
	char *head_hex = strtok(NULL, " \n"), *tail_hex = strtok(NULL, " \n");
	int head_len = unhex(head_hex, head, sizeof(head)), tail_len = unhex(tail_hex, tail, sizeof(tail));
	struct kdbus_msg *m = (void *)msgbuf;
	struct kdbus_item *it;

	CHECK(kept_memfd >= 0 && head_len > 0 && tail_len > 0, "reply without a kept memfd or parts");
	memset(msgbuf, 0, sizeof(msgbuf));
	m->dst_id = strtoull(dst_s, NULL, 0);
	m->payload_type = KDBUS_PAYLOAD_DBUS;
	m->cookie = strtoull(cookie_s, NULL, 0);
	m->cookie_reply = strtoull(reply_s, NULL, 0);
	it = add_vec(m->items, head, (size_t)head_len);
	it->type = KDBUS_ITEM_PAYLOAD_MEMFD;
	it->size = KDBUS_ITEM_HEADER_SIZE + sizeof(struct kdbus_memfd);
	it->memfd.fd = kept_memfd;
	it->memfd.start = 0;
	it->memfd.size = kept_size;
	it = add_vec(KDBUS_ITEM_NEXT(it), tail, (size_t)tail_len);
	m->size = (uint8_t *)it - (uint8_t *)m;
	if (send_msg(c->fd, m, 0, NULL) < 0)
		printf("errno %d\n", errno);
	else
		printf("ok\n");
}

int main(int argc, char **argv)
{
	struct conn c;
	uint64_t flags = 0;

	CHECK(argc == 5, "usage: bigpeer MOUNT_ROOT BUS NAME OUT_FILE");
	hello(&c, argv[1], argv[2], KDBUS_HELLO_ACCEPT_FD);
	free_slice(c.fd, c.hello.offset);
	CHECK(name_cmd(c.fd, KDBUS_CMD_NAME_ACQUIRE, argv[3], 0, &flags) == 0, "own %s", argv[3]);
	printf("id %llu\n", (unsigned long long)c.id);
	fflush(stdout);
	while (fgets(line, sizeof(line), stdin)) {
		if (!strncmp(line, "recv ", 5))
			do_recv(&c, argv[4], atoi(line + 5));
		else if (!strncmp(line, "reply ", 6))
			do_reply(&c, line + 6);
		else if (!strncmp(line, "quit", 4))
			break;
		else
			printf("unknown command\n");
		fflush(stdout);
	}
	return 0;
}
