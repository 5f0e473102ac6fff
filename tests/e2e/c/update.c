/* KDBUS_CMD_UPDATE: attach flags change what receivers get; who may change what; a policy holder
 * swaps its policy.  usage (as root): update MOUNT_ROOT UID */
#define _GNU_SOURCE
#include <sys/wait.h>

#include "msgutil.h"

static uint64_t msgbuf[1024];

static int update(int fd, uint64_t type, const void *payload, size_t len, uint64_t type2, const void *p2,
		  size_t len2)
{
	uint64_t buf[128] = {0};
	struct kdbus_cmd *cmd = (void *)buf;
	size_t size = sizeof(*cmd);
	struct kdbus_item *it = (void *)((uint8_t *)buf + size);
	it->type = type;
	it->size = KDBUS_ITEM_HEADER_SIZE + len;
	memcpy((uint8_t *)it + KDBUS_ITEM_HEADER_SIZE, payload, len);
	size += KDBUS_ALIGN8(it->size);
	if (type2) {
		it = (void *)((uint8_t *)buf + size);
		it->type = type2;
		it->size = KDBUS_ITEM_HEADER_SIZE + len2;
		memcpy((uint8_t *)it + KDBUS_ITEM_HEADER_SIZE, p2, len2);
		size += KDBUS_ALIGN8(it->size);
	}
	cmd->size = size;
	return ioctl(fd, KDBUS_CMD_UPDATE, cmd);
}

int main(int argc, char **argv)
{
	CHECK(argc == 3, "usage: update MOUNT_ROOT UID");
	const char *root = argv[1];
	uid_t uid = (uid_t)atoi(argv[2]);
	char bus[64], path[4096];
	uint64_t buf[64];
	struct conn a, b;
	struct kdbus_cmd_recv recv;

	snprintf(bus, sizeof(bus), "%u-update%d", geteuid(), getpid());
	snprintf(path, sizeof(path), "%s/control", root);
	int control = open(path, O_RDWR | O_CLOEXEC);
	CHECK(ioctl(control, KDBUS_CMD_BUS_MAKE, make_bus_cmd(buf, bus, KDBUS_MAKE_ACCESS_WORLD)) == 0, "BUS_MAKE");
	hello(&a, root, bus, 0);
	hello(&b, root, bus, 0);

	/* b stops asking for metadata: its next message carries none. */
	uint64_t none = 0, creds = KDBUS_ATTACH_CREDS, bad = 1ULL << 40;
	CHECK(update(b.fd, KDBUS_ITEM_ATTACH_FLAGS_RECV, &none, 8, 0, NULL, 0) == 0, "UPDATE recv flags to 0");
	struct kdbus_msg *m = build_msg(msgbuf, b.id, NULL, NULL, 0, 0, 1);
	CHECK(send_msg(a.fd, m, 0, NULL) == 0 && recv_msg(&b, &recv, 0, 0) == 0, "message");
	m = (void *)(b.pool + recv.msg.offset);
	CHECK(!find_item(m, KDBUS_ITEM_CREDS) && !find_item(m, KDBUS_ITEM_TIMESTAMP), "no metadata after UPDATE");
	free_slice(b.fd, recv.msg.offset);
	CHECK(update(b.fd, KDBUS_ITEM_ATTACH_FLAGS_RECV, &creds, 8, 0, NULL, 0) == 0, "UPDATE recv flags to CREDS");
	m = build_msg(msgbuf, b.id, NULL, NULL, 0, 0, 2);
	CHECK(send_msg(a.fd, m, 0, NULL) == 0 && recv_msg(&b, &recv, 0, 0) == 0, "message");
	m = (void *)(b.pool + recv.msg.offset);
	CHECK(find_item(m, KDBUS_ITEM_CREDS) && !find_item(m, KDBUS_ITEM_TIMESTAMP), "exactly CREDS");
	free_slice(b.fd, recv.msg.offset);
	OK("attach_flags_recv takes effect");

	/* a stops letting CONN_INFO reveal its creds. */
	CHECK(update(a.fd, KDBUS_ITEM_ATTACH_FLAGS_SEND, &none, 8, 0, NULL, 0) == 0, "UPDATE send flags to 0");
	struct kdbus_cmd_info info = { .size = sizeof(info), .id = a.id, .attach_flags = _KDBUS_ATTACH_ALL };
	CHECK(ioctl(b.fd, KDBUS_CMD_CONN_INFO, &info) == 0, "CONN_INFO");
	struct kdbus_info *i = (void *)(b.pool + info.offset);
	CHECK(i->size == sizeof(*i), "CONN_INFO reveals nothing after UPDATE (size %llu)", (unsigned long long)i->size);
	free_slice(b.fd, info.offset);
	OK("attach_flags_send takes effect");
	CHECK(update(a.fd, KDBUS_ITEM_ATTACH_FLAGS_SEND, &bad, 8, 0, NULL, 0) < 0 && errno == EINVAL,
	      "unknown attach flags -> EINVAL");
	CHECK(update(a.fd, KDBUS_ITEM_NAME, "com.example.x", sizeof("com.example.x"), 0, NULL, 0) < 0 &&
	      errno == EOPNOTSUPP, "policy from an ordinary connection -> EOPNOTSUPP");

	/* A policy holder swaps its policy with UPDATE. */
	struct conn holder;
	{
		uint64_t hbuf[64] = {0};
		struct kdbus_cmd_hello *h = (void *)hbuf;
		struct kdbus_item *it = (void *)((uint8_t *)h + sizeof(*h));
		it->type = KDBUS_ITEM_NAME;
		it->size = KDBUS_ITEM_HEADER_SIZE + sizeof("com.example.first");
		memcpy((uint8_t *)it + KDBUS_ITEM_HEADER_SIZE, "com.example.first", sizeof("com.example.first"));
		h->size = sizeof(*h) + KDBUS_ALIGN8(it->size);
		h->flags = KDBUS_HELLO_POLICY_HOLDER;
		h->pool_size = POOL_SIZE;
		holder.fd = open_bus(root, bus);
		CHECK(ioctl(holder.fd, KDBUS_CMD_HELLO, h) == 0, "HELLO policy holder");
	}
	CHECK(update(holder.fd, KDBUS_ITEM_ATTACH_FLAGS_SEND, &none, 8, 0, NULL, 0) < 0 && errno == EOPNOTSUPP,
	      "a policy holder sends nothing, so no send flags");
	struct kdbus_policy_access own = { .type = KDBUS_POLICY_ACCESS_USER, .access = KDBUS_POLICY_OWN, .id = uid };
	CHECK(update(holder.fd, KDBUS_ITEM_NAME, "com.example.second", sizeof("com.example.second"),
		     KDBUS_ITEM_POLICY_ACCESS, &own, sizeof(own)) == 0, "UPDATE policy");
	CHECK(update(holder.fd, KDBUS_ITEM_NAME, "com.example.a", sizeof("com.example.a"),
		     KDBUS_ITEM_NAME, "com.example.b", sizeof("com.example.b")) < 0 && errno == E2BIG,
	      "two names in one upload -> E2BIG");
	CHECK(update(holder.fd, KDBUS_ITEM_POLICY_ACCESS, &own, sizeof(own), 0, NULL, 0) < 0 && errno == EINVAL,
	      "POLICY_ACCESS before NAME -> EINVAL");
	pid_t child = fork();
	if (child == 0) {
		struct conn u;
		CHECK(setresgid(uid, uid, uid) == 0 && setresuid(uid, uid, uid) == 0, "drop privileges");
		hello(&u, root, bus, 0);
		CHECK(name_cmd(u.fd, KDBUS_CMD_NAME_ACQUIRE, "com.example.second", 0, NULL) == 0, "the new policy grants OWN");
		CHECK(name_cmd(u.fd, KDBUS_CMD_NAME_ACQUIRE, "com.example.first", 0, NULL) < 0 && errno == EPERM,
		      "the old policy is gone");
		_exit(0);
	}
	int status;
	CHECK(waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0, "child");
	OK("policy holder UPDATE");
	close(holder.fd);
	close(control);
	printf("update: all checks passed\n");
	return 0;
}
