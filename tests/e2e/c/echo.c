/* A C peer for the tests of the Python client: it answers calls, and makes calls on cue.
 * usage: echo MOUNT_ROOT BUS [NAME]
 * Connects (sending and asking for all metadata), acquires NAME if given, prints "id N", then:
 *   a call it receives is answered with "echo:" and the call's payload;
 *   stdin "call DEST PAYLOAD" (DEST an id or a well-known name): a synchronous call with a 5 s
 *     timeout -> "reply PAYLOAD" or "errno N";
 *   stdin "quit" (or EOF) ends it. */
#include <poll.h>

#include "msgutil.h"

static uint64_t cookie;

static void answer(struct conn *c, const struct kdbus_msg *call)
{
	uint64_t buf[512];
	char data[2048];
	uint64_t len = 0;
	const uint8_t *payload = payload_of(call, &len);

	if (len > sizeof(data) - 5)
		len = sizeof(data) - 5;
	memcpy(data, "echo:", 5);
	if (payload)
		memcpy(data + 5, payload, len);
	struct kdbus_msg *m = build_msg(buf, call->src_id, NULL, data, 5 + len, 0, ++cookie);
	m->cookie_reply = call->cookie;
	CHECK(send_msg(c->fd, m, 0, NULL) == 0, "reply to call %llu", (unsigned long long)call->cookie);
}

static void receive_all(struct conn *c)
{
	struct kdbus_cmd_recv recv;

	while (recv_msg(c, &recv, 0, 0) == 0) {
		const struct kdbus_msg *m = (const void *)(c->pool + recv.msg.offset);
		if (m->flags & KDBUS_MSG_EXPECT_REPLY)
			answer(c, m);
		CHECK(free_slice(c->fd, recv.msg.offset) == 0, "FREE");
	}
	CHECK(errno == EAGAIN, "RECV");
}

static void call(struct conn *c, const char *dest, const char *text)
{
	uint64_t buf[512];
	char *end;
	unsigned long long id = strtoull(dest, &end, 10);
	int by_name = *end != '\0';
	struct kdbus_msg *m = build_msg(buf, by_name ? KDBUS_DST_ID_NAME : id, by_name ? dest : NULL,
					text, strlen(text), KDBUS_MSG_EXPECT_REPLY, ++cookie);
	struct kdbus_cmd_send sent;
	uint64_t len = 0;

	m->timeout_ns = now_ns() + 5000000000ULL;
	if (send_msg(c->fd, m, KDBUS_SEND_SYNC_REPLY, &sent) < 0) {
		printf("errno %d\n", errno);
		return;
	}
	const struct kdbus_msg *reply = (const void *)(c->pool + sent.reply.offset);
	const uint8_t *payload = payload_of(reply, &len);
	printf("reply %.*s\n", (int)len, payload ? (const char *)payload : "");
	CHECK(free_slice(c->fd, sent.reply.offset) == 0, "FREE reply");
}

int main(int argc, char **argv)
{
	char line[512], dest[256], text[256];
	struct conn c;

	CHECK(argc == 3 || argc == 4, "usage: echo MOUNT_ROOT BUS [NAME]");
	hello(&c, argv[1], argv[2], 0);
	CHECK(free_slice(c.fd, c.hello.offset) == 0, "FREE hello slice");
	if (argc == 4)
		CHECK(name_cmd(c.fd, KDBUS_CMD_NAME_ACQUIRE, argv[3], 0, NULL) == 0, "acquire %s", argv[3]);
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
		if (sscanf(line, "call %255s %255s", dest, text) == 2)
			call(&c, dest, text);
		else
			printf("unknown command\n");
		fflush(stdout);
	}
	return 0;
}
