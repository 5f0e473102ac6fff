/* A C peer that receives every broadcast, for the kdbusctl tests.
 * usage: sink MOUNT_ROOT BUS
 * Connects, adds a match without rules (it selects every signal and notification), prints "id N",
 * then one line per message it receives:
 *   msg SRC_ID DST_ID FLAGS COOKIE PAYLOAD_HEX   (PAYLOAD_HEX "-" when the payload is empty)
 * stdin "quit" (or EOF) ends it. */
#include <poll.h>

#include "msgutil.h"

static void add_match_all(int fd)
{
	struct kdbus_cmd_match cmd = { .size = sizeof(cmd), .cookie = 1 };
	CHECK(ioctl(fd, KDBUS_CMD_MATCH_ADD, &cmd) == 0, "MATCH_ADD");
}

static void print_message(const struct kdbus_msg *m)
{
	uint64_t len = 0;
	const uint8_t *payload = payload_of(m, &len);

	printf("msg %llu %llu %llu %llu ", (unsigned long long)m->src_id, (unsigned long long)m->dst_id,
	       (unsigned long long)m->flags, (unsigned long long)m->cookie);
	if (!payload || len == 0)
		printf("-");
	for (uint64_t i = 0; payload && i < len; i++)
		printf("%02x", payload[i]);
	printf("\n");
	fflush(stdout);
}

static void receive_all(struct conn *c)
{
	struct kdbus_cmd_recv recv;

	while (recv_msg(c, &recv, 0, 0) == 0) {
		print_message((const void *)(c->pool + recv.msg.offset));
		CHECK(free_slice(c->fd, recv.msg.offset) == 0, "FREE");
	}
	CHECK(errno == EAGAIN, "RECV");
}

int main(int argc, char **argv)
{
	char line[256];
	struct conn c;

	CHECK(argc == 3, "usage: sink MOUNT_ROOT BUS");
	hello(&c, argv[1], argv[2], 0);
	CHECK(free_slice(c.fd, c.hello.offset) == 0, "FREE hello slice");
	add_match_all(c.fd);
	printf("id %llu\n", (unsigned long long)c.id);
	fflush(stdout);

	for (;;) {
		struct pollfd fds[2] = { { .fd = 0, .events = POLLIN }, { .fd = c.fd, .events = POLLIN } };
		CHECK(poll(fds, 2, -1) > 0, "poll");
		if (fds[1].revents)
			receive_all(&c);
		if (!fds[0].revents)
			continue;
		if (!fgets(line, sizeof(line), stdin) || strncmp(line, "quit", 4) == 0)
			break;
	}
	return 0;
}
