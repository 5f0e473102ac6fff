/* A native kdbus peer for the classic-client tests, driven line by line from stdin. It does the
 * kdbus work (HELLO, SEND with payload vectors, bloom filters and FDS, MATCH_ADD, RECV); the test
 * encodes and decodes the D-Bus payloads (GVariant, as sd-bus put them on kdbus) and passes them
 * in hex.  usage: dbuspeer MOUNT_ROOT BUS
 * Prints "id N", then answers:
 *   own NAME                              -> "ok RETURN_FLAGS" or "errno N"
 *   match HEX_ITEMS                       MATCH_ADD of these items (a fresh cookie) -> "ok" / "errno N"
 *   send DST FLAGS COOKIE ARG HEX_PAYLOAD HEX_BLOOM|- TEXT|-
 *       DST: a connection id, "broadcast" or a well-known name; FLAGS: kdbus message flags;
 *       ARG: the reply cookie, or with EXPECT_REPLY a timeout in ms; TEXT: passed as the read end
 *       of a pipe holding it (FDS item)                                    -> "ok" / "errno N"
 *   recv MS   the next message within MS ms:
 *       "msg SRC DST COOKIE COOKIE_REPLY FLAGS HEX_PAYLOAD FDTEXT|-"  (FDTEXT: hex of what the
 *       first passed fd reads, "-" without one, "none" when it was not installed)
 *       "note TYPE ID1 ID2 NAME|-" for a kernel notification, or "timeout"
 *   quit */
#include <poll.h>

#include "msgutil.h"

static void print_hex(const uint8_t *data, size_t len)
{
	for (size_t i = 0; i < len; i++)
		printf("%02x", data[i]);
	if (!len)
		printf("-");
}

static uint8_t payload[4 << 20], bloom[4096], items[8192];
static uint64_t msgbuf[(4 << 20) / 8 + 1024];
static char line[(8 << 20) + 4096];

static void do_send(struct conn *c, char *args)
{
	char *dst = strtok(args, " \n"), *flags_s = strtok(NULL, " \n"), *cookie_s = strtok(NULL, " \n");
	char *arg_s = strtok(NULL, " \n"), *hex = strtok(NULL, " \n"), *bloom_hex = strtok(NULL, " \n");
	char *text = strtok(NULL, " \n");
	uint64_t flags = strtoull(flags_s, NULL, 0), cookie = strtoull(cookie_s, NULL, 0);
	uint64_t arg = strtoull(arg_s, NULL, 0);
	int len = unhex(hex, payload, sizeof(payload));
	int fds[2] = { -1, -1 };
	struct kdbus_msg *m;
	struct kdbus_item *it;
	const char *name = NULL;
	uint64_t dst_id;

	if (!strcmp(dst, "broadcast"))
		dst_id = KDBUS_DST_ID_BROADCAST;
	else if (dst[0] >= '0' && dst[0] <= '9')
		dst_id = strtoull(dst, NULL, 0);
	else {
		dst_id = KDBUS_DST_ID_NAME;
		name = dst;
	}
	m = build_msg(msgbuf, dst_id, name, payload, len, flags, cookie);
	if (flags & KDBUS_MSG_EXPECT_REPLY)
		m->timeout_ns = now_ns() + arg * 1000000ULL;
	else
		m->cookie_reply = arg;
	it = (void *)((uint8_t *)m + m->size);
	if (bloom_hex && strcmp(bloom_hex, "-")) {
		int blen = unhex(bloom_hex, bloom, sizeof(bloom));
		it->type = KDBUS_ITEM_BLOOM_FILTER;
		it->size = KDBUS_ITEM_HEADER_SIZE + sizeof(struct kdbus_bloom_filter) + blen;
		it->bloom_filter.generation = 0;
		memcpy(it->bloom_filter.data, bloom, blen);
		m->size += KDBUS_ALIGN8(it->size);
		it = KDBUS_ITEM_NEXT(it);
	}
	if (text && strcmp(text, "-")) {
		CHECK(pipe(fds) == 0, "pipe");
		CHECK(write(fds[1], text, strlen(text)) == (ssize_t)strlen(text), "write pipe");
		close(fds[1]);
		it->type = KDBUS_ITEM_FDS;
		it->size = KDBUS_ITEM_HEADER_SIZE + sizeof(int);
		it->fds[0] = fds[0];
		m->size += KDBUS_ALIGN8(it->size);
	}
	if (send_msg(c->fd, m, 0, NULL) < 0)
		printf("errno %d\n", errno);
	else
		printf("ok\n");
	if (fds[0] >= 0)
		close(fds[0]);
}

static void print_fd(int fd)
{
	char buf[256];
	ssize_t n;
	if (fd < 0) {
		printf("none");
		return;
	}
	n = read(fd, buf, sizeof(buf));
	close(fd);
	print_hex((uint8_t *)buf, n > 0 ? (size_t)n : 0);
}

static void do_recv(struct conn *c, int ms)
{
	struct kdbus_cmd_recv recv;
	const struct kdbus_msg *m;
	const struct kdbus_item *it;

	if (!recv_within(c, &recv, ms)) {
		printf("timeout\n");
		return;
	}
	m = (const void *)(c->pool + recv.msg.offset);
	if (m->src_id == KDBUS_SRC_ID_KERNEL) {
		KDBUS_FOREACH(it, m->items, m->size - offsetof(struct kdbus_msg, items)) {
			if (it->type == KDBUS_ITEM_ID_ADD || it->type == KDBUS_ITEM_ID_REMOVE)
				printf("note %llu %llu 0 -\n", (unsigned long long)it->type,
				       (unsigned long long)it->id_change.id);
			else if (it->type >= KDBUS_ITEM_NAME_ADD && it->type <= KDBUS_ITEM_NAME_CHANGE)
				printf("note %llu %llu %llu %s\n", (unsigned long long)it->type,
				       (unsigned long long)it->name_change.old_id.id,
				       (unsigned long long)it->name_change.new_id.id, it->name_change.name);
			else if (it->type == KDBUS_ITEM_REPLY_TIMEOUT || it->type == KDBUS_ITEM_REPLY_DEAD)
				printf("note %llu %llu 0 -\n", (unsigned long long)it->type,
				       (unsigned long long)m->cookie_reply);
		}
	} else {
		uint64_t len = 0;
		const uint8_t *data = payload_of(m, &len);
		const struct kdbus_item *fds = find_item(m, KDBUS_ITEM_FDS);
		printf("msg %llu %llu %llu %llu %llu ", (unsigned long long)m->src_id,
		       (unsigned long long)m->dst_id, (unsigned long long)m->cookie,
		       (unsigned long long)((m->flags & KDBUS_MSG_EXPECT_REPLY) ? 0 : m->cookie_reply),
		       (unsigned long long)m->flags);
		print_hex(data, data ? len : 0);
		printf(" ");
		if (fds)
			print_fd(fds->fds[0]);
		else
			printf("-");
		printf("\n");
	}
	fflush(stdout);
	CHECK(free_slice(c->fd, recv.msg.offset) == 0, "FREE");
}

int main(int argc, char **argv)
{
	struct conn c;
	uint64_t cookie = 100;

	CHECK(argc == 3, "usage: dbuspeer MOUNT_ROOT BUS");
	hello(&c, argv[1], argv[2], KDBUS_HELLO_ACCEPT_FD);
	free_slice(c.fd, c.hello.offset);
	printf("id %llu\n", (unsigned long long)c.id);
	fflush(stdout);
	while (fgets(line, sizeof(line), stdin)) {
		if (!strncmp(line, "own ", 4)) {
			uint64_t flags = 0;
			line[strcspn(line, "\n")] = 0;
			if (name_cmd(c.fd, KDBUS_CMD_NAME_ACQUIRE, line + 4, 0, &flags) < 0)
				printf("errno %d\n", errno);
			else
				printf("ok %llu\n", (unsigned long long)flags);
		} else if (!strncmp(line, "match ", 6)) {
			struct kdbus_cmd_match *cmd = (void *)msgbuf;
			line[strcspn(line, "\n")] = 0;
			int n = unhex(line + 6, items, sizeof(items));
			memset(cmd, 0, sizeof(*cmd));
			cmd->size = sizeof(*cmd) + n;
			cmd->cookie = ++cookie;
			memcpy(cmd->items, items, n);
			if (ioctl(c.fd, KDBUS_CMD_MATCH_ADD, cmd) < 0)
				printf("errno %d\n", errno);
			else
				printf("ok\n");
		} else if (!strncmp(line, "send ", 5)) {
			do_send(&c, line + 5);
		} else if (!strncmp(line, "recv ", 5)) {
			do_recv(&c, atoi(line + 5));
		} else if (!strncmp(line, "quit", 4)) {
			break;
		} else {
			printf("unknown command\n");
		}
		fflush(stdout);
	}
	return 0;
}
