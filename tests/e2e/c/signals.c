/* Broadcasts and matches with bloom filters, kernel notifications, monitors, activators, a slow
 * subscriber's lost counter, and a policy holder.  usage (as root): signals MOUNT_ROOT UID */
#define _GNU_SOURCE
#include <poll.h>
#include <sys/wait.h>

#include "msgutil.h"

#define BLOOM 64
static uint64_t msgbuf[4096];

static struct kdbus_item *add_item(void *base, size_t *size, uint64_t type, const void *payload, size_t len)
{
	struct kdbus_item *it = (void *)((uint8_t *)base + KDBUS_ALIGN8(*size));
	it->type = type;
	it->size = KDBUS_ITEM_HEADER_SIZE + len;
	memcpy((uint8_t *)it + KDBUS_ITEM_HEADER_SIZE, payload, len);
	*size = KDBUS_ALIGN8(*size) + it->size;
	return it;
}

/* MATCH_ADD with one rule item (or none: type 0). */
static int match(struct conn *c, uint64_t cookie, uint64_t flags, uint64_t type, const void *payload, size_t len)
{
	uint64_t buf[512] = {0};
	struct kdbus_cmd_match *cmd = (void *)buf;
	size_t size = sizeof(*cmd);
	if (type)
		add_item(buf, &size, type, payload, len);
	cmd->size = size;
	cmd->cookie = cookie;
	cmd->flags = flags;
	return ioctl(c->fd, KDBUS_CMD_MATCH_ADD, cmd);
}

static int match_remove(struct conn *c, uint64_t cookie)
{
	struct kdbus_cmd_match cmd = { .size = sizeof(cmd), .cookie = cookie };
	return ioctl(c->fd, KDBUS_CMD_MATCH_REMOVE, &cmd);
}

static int broadcast(struct conn *from, uint64_t generation, const uint8_t *filter)
{
	uint64_t bloom[1 + BLOOM / 8] = { generation };
	memcpy(&bloom[1], filter, BLOOM);
	struct kdbus_msg *m = build_msg(msgbuf, KDBUS_DST_ID_BROADCAST, NULL, NULL, 0, KDBUS_MSG_SIGNAL, 77);
	size_t size = m->size;
	add_item(m, &size, KDBUS_ITEM_BLOOM_FILTER, bloom, sizeof(bloom));
	m->size = size;
	return send_msg(from->fd, m, 0, NULL);
}

/* Receive one message; returns its first item type (0 if none), or -1 if the queue is empty. */
static long long take(struct conn *c, struct kdbus_msg **out)
{
	struct kdbus_cmd_recv recv;
	if (recv_msg(c, &recv, 0, 0) < 0)
		return -1;
	struct kdbus_msg *m = (void *)(c->pool + recv.msg.offset);
	long long type = m->size > sizeof(*m) ? (long long)m->items[0].type : 0;
	if (out)
		*out = m;
	free_slice(c->fd, recv.msg.offset);
	return type;
}

static int count(struct conn *c)
{
	int n = 0;
	while (take(c, NULL) >= 0)
		n++;
	return n;
}

int main(int argc, char **argv)
{
	CHECK(argc == 3, "usage: signals MOUNT_ROOT UID");
	const char *root = argv[1];
	uid_t uid = (uid_t)atoi(argv[2]);
	char bus[64], suffix[32];
	struct conn s, a, b;
	struct kdbus_msg *m;

	snprintf(suffix, sizeof(suffix), "sig%d", getpid());
	/* The bus is world-accessible so the unprivileged part below can connect. */
	{
		uint64_t buf[64];
		char path[4096];
		snprintf(bus, sizeof(bus), "%u-%s", geteuid(), suffix);
		snprintf(path, sizeof(path), "%s/control", root);
		int fd = open(path, O_RDWR | O_CLOEXEC);
		CHECK(fd >= 0 && ioctl(fd, KDBUS_CMD_BUS_MAKE, make_bus_cmd(buf, bus, KDBUS_MAKE_ACCESS_WORLD)) == 0,
		      "BUS_MAKE");
	}
	hello(&s, root, bus, 0);
	hello(&a, root, bus, 0);
	hello(&b, root, bus, 0);

	/* Bloom matching, as kdbus's match-bloom test. */
	uint8_t mask[2 * BLOOM] = {0};
	mask[0] = 0x55;
	mask[63] = 0x80;
	mask[BLOOM + 1] = 0xaa;
	mask[BLOOM + 9] = 0x02;
	CHECK(match(&a, 1, 0, KDBUS_ITEM_BLOOM_MASK, mask, sizeof(mask)) == 0, "MATCH_ADD bloom mask");
	uint8_t filter[BLOOM] = {0};
	CHECK(broadcast(&s, 0, filter) == 0 && take(&a, NULL) < 0, "all-zero filter is not delivered");
	memcpy(filter, mask, BLOOM);
	CHECK(broadcast(&s, 0, filter) == 0 && take(&a, NULL) >= 0, "filter == mask is delivered");
	filter[5] = 0xff;
	CHECK(broadcast(&s, 0, filter) == 0 && take(&a, NULL) >= 0, "filter with more bits is delivered");
	CHECK(broadcast(&s, 1, filter) == 0 && take(&a, NULL) < 0, "generation 1 needs the gen-1 mask");
	filter[1] = 0xaa;
	filter[9] = 0x02;
	CHECK(broadcast(&s, 1, filter) == 0 && take(&a, NULL) >= 0, "generation 1 filter with gen-1 bits");
	CHECK(take(&b, NULL) < 0 && take(&s, NULL) < 0, "connections without matches get nothing");
	OK("bloom matching (match-bloom vectors)");
	errno = 0;
	CHECK(match(&a, 2, 0, KDBUS_ITEM_BLOOM_MASK, mask, 12) < 0 && errno == EDOM, "mask of 12 bytes -> EDOM");
	CHECK(match_remove(&a, 99) < 0 && errno == EBADSLT, "MATCH_REMOVE unknown cookie -> EBADSLT");
	CHECK(match_remove(&a, 1) == 0, "MATCH_REMOVE");
	memset(filter, 0xff, BLOOM);
	CHECK(broadcast(&s, 0, filter) == 0 && take(&a, NULL) < 0, "removed match no longer selects");
	OK("EDOM, EBADSLT, MATCH_REMOVE");

	/* ID and DST_ID rules; REPLACE. */
	uint64_t id = s.id;
	CHECK(match(&a, 3, 0, KDBUS_ITEM_ID, &id, 8) == 0, "match on sender id");
	CHECK(broadcast(&s, 0, filter) == 0 && take(&a, NULL) >= 0, "broadcast from s selected by ID");
	CHECK(broadcast(&b, 0, filter) == 0 && take(&a, NULL) < 0, "broadcast from b not selected");
	id = b.id;
	CHECK(match(&a, 3, KDBUS_MATCH_REPLACE, KDBUS_ITEM_ID, &id, 8) == 0, "REPLACE the entry");
	CHECK(broadcast(&s, 0, filter) == 0 && take(&a, NULL) < 0, "after REPLACE: s no longer selected");
	CHECK(broadcast(&b, 0, filter) == 0 && take(&a, NULL) >= 0, "after REPLACE: b selected");
	match_remove(&a, 3);
	OK("ID rule and MATCH_REPLACE");

	/* NAME rule: the sender must own the name. */
	CHECK(match(&a, 4, 0, KDBUS_ITEM_NAME, "org.kdbusfs.Sender", sizeof("org.kdbusfs.Sender")) == 0, "match NAME");
	CHECK(broadcast(&s, 0, filter) == 0 && take(&a, NULL) < 0, "not delivered before s owns the name");
	CHECK(name_cmd(s.fd, KDBUS_CMD_NAME_ACQUIRE, "org.kdbusfs.Sender", 0, NULL) == 0, "s acquires");
	CHECK(broadcast(&s, 0, filter) == 0 && take(&a, NULL) >= 0, "delivered once s owns the name");
	match_remove(&a, 4);
	OK("NAME rule");

	/* Unicast signals need a match too. */
	m = build_msg(msgbuf, a.id, NULL, NULL, 0, KDBUS_MSG_SIGNAL, 5);
	{
		uint64_t bloom[1 + BLOOM / 8] = {0};
		size_t size = m->size;
		add_item(m, &size, KDBUS_ITEM_BLOOM_FILTER, bloom, sizeof(bloom));
		m->size = size;
	}
	CHECK(send_msg(s.fd, m, 0, NULL) == 0 && take(&a, NULL) < 0, "unicast signal without a match is dropped");
	id = a.id;
	CHECK(match(&a, 6, 0, KDBUS_ITEM_DST_ID, &id, 8) == 0, "match DST_ID = own id");
	CHECK(send_msg(s.fd, m, 0, NULL) == 0 && take(&a, NULL) >= 0, "unicast signal selected by DST_ID");
	CHECK(broadcast(&s, 0, filter) == 0 && take(&a, NULL) < 0, "DST_ID = own id does not select broadcasts");
	match_remove(&a, 6);
	OK("unicast signals and DST_ID");

	/* Kernel notifications. */
	struct kdbus_notify_id_change any_id = { .id = KDBUS_MATCH_ID_ANY };
	CHECK(match(&b, 10, 0, KDBUS_ITEM_ID_ADD, &any_id, sizeof(any_id)) == 0, "match ID_ADD");
	CHECK(match(&b, 11, 0, KDBUS_ITEM_ID_REMOVE, &any_id, sizeof(any_id)) == 0, "match ID_REMOVE");
	struct { struct kdbus_notify_name_change nc; char name[32]; } nrule = {
		.nc = { .old_id = { .id = KDBUS_MATCH_ID_ANY }, .new_id = { .id = KDBUS_MATCH_ID_ANY } } };
	strcpy(nrule.name, "org.kdbusfs.Watched");
	size_t nlen = sizeof(nrule.nc) + strlen(nrule.name) + 1;
	CHECK(match(&b, 12, 0, KDBUS_ITEM_NAME_ADD, &nrule, nlen) == 0, "match NAME_ADD");
	CHECK(match(&b, 13, 0, KDBUS_ITEM_NAME_CHANGE, &nrule, nlen) == 0, "match NAME_CHANGE");
	CHECK(match(&b, 14, 0, KDBUS_ITEM_NAME_REMOVE, &nrule, nlen) == 0, "match NAME_REMOVE");
	struct conn d, e;
	hello(&d, root, bus, 0);
	CHECK(take(&b, &m) == KDBUS_ITEM_ID_ADD && m->items[0].id_change.id == d.id && m->src_id == 0 &&
	      find_item(m, KDBUS_ITEM_TIMESTAMP), "ID_ADD for d, with a TIMESTAMP");
	hello(&e, root, bus, 0);
	CHECK(take(&b, &m) == KDBUS_ITEM_ID_ADD, "ID_ADD for e");
	CHECK(name_cmd(d.fd, KDBUS_CMD_NAME_ACQUIRE, "org.kdbusfs.Watched", KDBUS_NAME_ALLOW_REPLACEMENT, NULL) == 0, "d acquires");
	CHECK(take(&b, &m) == KDBUS_ITEM_NAME_ADD && m->items[0].name_change.new_id.id == d.id &&
	      m->items[0].name_change.old_id.id == 0 &&
	      strcmp((char *)m->items[0].data + 32, "org.kdbusfs.Watched") == 0, "NAME_ADD");
	CHECK(name_cmd(e.fd, KDBUS_CMD_NAME_ACQUIRE, "org.kdbusfs.Watched", KDBUS_NAME_REPLACE_EXISTING, NULL) == 0, "e replaces d");
	CHECK(take(&b, &m) == KDBUS_ITEM_NAME_CHANGE && m->items[0].name_change.old_id.id == d.id &&
	      m->items[0].name_change.new_id.id == e.id, "NAME_CHANGE d -> e");
	CHECK(name_cmd(s.fd, KDBUS_CMD_NAME_ACQUIRE, "org.kdbusfs.Other", 0, NULL) == 0, "s acquires another name");
	CHECK(take(&b, NULL) < 0, "the name rule filters other names");
	close(e.fd);
	munmap(e.pool, POOL_SIZE);
	CHECK(take(&b, &m) == KDBUS_ITEM_NAME_REMOVE && m->items[0].name_change.old_id.id == e.id, "NAME_REMOVE when e goes");
	CHECK(take(&b, &m) == KDBUS_ITEM_ID_REMOVE && m->items[0].id_change.id == e.id, "ID_REMOVE when e goes");
	OK("notifications: ID_ADD, NAME_ADD, NAME_CHANGE, NAME_REMOVE, ID_REMOVE");
	CHECK(match(&b, 15, 0, 0, NULL, 0) == 0, "an empty match entry");
	CHECK(broadcast(&s, 0, filter) == 0 && take(&b, NULL) >= 0, "an empty entry matches every broadcast");
	for (uint64_t c = 10; c <= 15; c++)
		match_remove(&b, c);
	for (int i = 0; i < 256; i++)
		CHECK(match(&b, 100 + i, 0, 0, NULL, 0) == 0, "match %d", i);
	CHECK(match(&b, 999, 0, 0, NULL, 0) < 0 && errno == EMFILE, "257th match -> EMFILE");
	for (int i = 0; i < 256; i++)
		match_remove(&b, 100 + i);
	OK("empty entries match all; 256 entries at most");
	count(&b);

	/* A monitor sees a call and a broadcast; it cannot act on the bus. */
	struct conn mon;
	hello(&mon, root, bus, KDBUS_HELLO_MONITOR);
	m = build_msg(msgbuf, a.id, NULL, "call", 4, KDBUS_MSG_EXPECT_REPLY, 300);
	m->timeout_ns = now_ns() + 5000000000ULL;
	CHECK(send_msg(s.fd, m, 0, NULL) == 0, "call s -> a");
	CHECK(broadcast(&s, 0, filter) == 0, "broadcast");
	struct kdbus_msg *seen;
	CHECK(take(&mon, &seen) >= 0 && seen->cookie == 300 && seen->src_id == s.id && seen->dst_id == a.id,
	      "monitor saw the call");
	CHECK(take(&mon, &seen) >= 0 && seen->dst_id == KDBUS_DST_ID_BROADCAST, "monitor saw the broadcast");
	CHECK(take(&a, NULL) >= 0, "a got the call");
	CHECK(name_cmd(mon.fd, KDBUS_CMD_NAME_ACQUIRE, "org.kdbusfs.Mon", 0, NULL) < 0 && errno == EOPNOTSUPP,
	      "monitors own no names");
	CHECK(match(&mon, 1, 0, 0, NULL, 0) < 0 && errno == EOPNOTSUPP, "monitors add no matches");
	CHECK(send_msg(mon.fd, m, 0, NULL) < 0 && errno == EOPNOTSUPP, "monitors send nothing");
	{
		struct kdbus_cmd_list list = { .size = sizeof(list), .flags = KDBUS_LIST_UNIQUE };
		CHECK(ioctl(s.fd, KDBUS_CMD_LIST, &list) == 0, "LIST");
		for (uint64_t off = 0; off < list.list_size;) {
			struct kdbus_info *i = (void *)(s.pool + list.offset + off);
			CHECK(i->id != mon.id, "monitors are not listed");
			off += KDBUS_ALIGN8(i->size);
		}
		free_slice(s.fd, list.offset);
	}
	CHECK(take(&b, NULL) < 0, "no ID_ADD was sent for the monitor");
	OK("monitor");
	close(mon.fd);
	munmap(mon.pool, POOL_SIZE);

	/* Activator: holds a name and its messages until an implementer takes it. */
	struct conn act, impl;
	{
		uint64_t buf[128] = {0};
		struct kdbus_cmd_hello *h = (void *)buf;
		size_t size = sizeof(*h);
		add_item(buf, &size, KDBUS_ITEM_NAME, "org.kdbusfs.Lazy", sizeof("org.kdbusfs.Lazy"));
		h->size = size;
		h->flags = KDBUS_HELLO_ACTIVATOR;
		h->pool_size = POOL_SIZE;
		act.fd = open_bus(root, bus);
		CHECK(ioctl(act.fd, KDBUS_CMD_HELLO, h) == 0, "HELLO activator");
		act.id = h->id;
		act.pool = mmap(NULL, POOL_SIZE, PROT_READ, MAP_SHARED, act.fd, 0);
		free_slice(act.fd, h->offset);
		int dup_fd = open_bus(root, bus);
		CHECK(ioctl(dup_fd, KDBUS_CMD_HELLO, h) < 0 && errno == EEXIST, "a second activator -> EEXIST");
		close(dup_fd);
	}
	m = build_msg(msgbuf, 0, "org.kdbusfs.Lazy", "wake", 4, KDBUS_MSG_EXPECT_REPLY, 400);
	m->timeout_ns = now_ns() + 5000000000ULL;
	CHECK(send_msg(s.fd, m, 0, NULL) == 0, "call to the activatable name");
	struct pollfd p = { .fd = act.fd, .events = POLLIN };
	CHECK(poll(&p, 1, 1000) == 1, "the activator wakes");
	m = build_msg(msgbuf, 0, "org.kdbusfs.Lazy", NULL, 0, KDBUS_MSG_NO_AUTO_START, 401);
	CHECK(send_msg(s.fd, m, 0, NULL) < 0 && errno == EADDRNOTAVAIL, "NO_AUTO_START -> EADDRNOTAVAIL");
	m = build_msg(msgbuf, act.id, NULL, NULL, 0, 0, 402);
	CHECK(send_msg(s.fd, m, 0, NULL) < 0 && errno == ENXIO, "activators cannot be addressed by id");
	hello(&impl, root, bus, 0);
	CHECK(name_cmd(impl.fd, KDBUS_CMD_NAME_ACQUIRE, "org.kdbusfs.Lazy", 0, NULL) == 0, "implementer takes the name");
	CHECK(take(&act, NULL) < 0, "the activator's queue moved");
	CHECK(take(&impl, &seen) >= 0 && seen->cookie == 400, "the implementer got the queued call");
	m = build_msg(msgbuf, s.id, NULL, "done", 4, 0, 403);
	m->cookie_reply = 400;
	CHECK(send_msg(impl.fd, m, 0, NULL) == 0, "the implementer answers the call made to the activator");
	CHECK(take(&s, &seen) >= 0 && seen->cookie_reply == 400, "the caller got the answer");
	m = build_msg(msgbuf, 0, "org.kdbusfs.Lazy", NULL, 0, 0, 404);
	CHECK(send_msg(s.fd, m, 0, NULL) == 0, "another message to the name");
	CHECK(name_cmd(impl.fd, KDBUS_CMD_NAME_RELEASE, "org.kdbusfs.Lazy", 0, NULL) == 0, "implementer releases");
	CHECK(take(&impl, NULL) < 0 && take(&act, &seen) >= 0 && seen->cookie == 404, "the message went back");
	OK("activator: queue, hand-over, answer, hand-back");

	/* A slow subscriber loses broadcasts; a reading one does not. */
	CHECK(match(&a, 50, 0, 0, NULL, 0) == 0 && match(&b, 50, 0, 0, NULL, 0) == 0, "match all");
	count(&a);
	count(&b);
	int got_b = 0;
	for (int i = 0; i < 300; i++) {
		CHECK(broadcast(&s, 0, filter) == 0, "broadcast %d", i);
		got_b += count(&b);
	}
	struct kdbus_cmd_recv recv;
	CHECK(recv_msg(&a, &recv, 0, 0) == 0 && recv.dropped_msgs == 300 - 256 &&
	      (recv.return_flags & KDBUS_RECV_RETURN_DROPPED_MSGS), "dropped_msgs %llu",
	      (unsigned long long)recv.dropped_msgs);
	free_slice(a.fd, recv.msg.offset);
	CHECK(got_b == 300, "the reading subscriber got all 300 (%d)", got_b);
	OK("slow subscriber: dropped_msgs = 44, others unaffected");

	/* A policy holder opens a name to everybody; an unprivileged user then owns and is talked to. */
	struct conn holder;
	{
		uint64_t buf[128] = {0};
		struct kdbus_cmd_hello *h = (void *)buf;
		size_t size = sizeof(*h);
		struct kdbus_policy_access own = { .type = KDBUS_POLICY_ACCESS_WORLD, .access = KDBUS_POLICY_OWN };
		add_item(buf, &size, KDBUS_ITEM_NAME, "com.example.granted", sizeof("com.example.granted"));
		add_item(buf, &size, KDBUS_ITEM_POLICY_ACCESS, &own, sizeof(own));
		h->size = size;
		h->flags = KDBUS_HELLO_POLICY_HOLDER;
		h->pool_size = POOL_SIZE;
		holder.fd = open_bus(root, bus);
		CHECK(ioctl(holder.fd, KDBUS_CMD_HELLO, h) == 0, "HELLO policy holder");
		CHECK(send_msg(holder.fd, m, 0, NULL) < 0 && errno == EOPNOTSUPP, "policy holders send nothing");
	}
	pid_t child = fork();
	if (child == 0) {
		struct conn u;
		CHECK(setresgid(uid, uid, uid) == 0 && setresuid(uid, uid, uid) == 0, "drop privileges");
		hello(&u, root, bus, 0);
		CHECK(name_cmd(u.fd, KDBUS_CMD_NAME_ACQUIRE, "com.example.granted", 0, NULL) == 0, "policy grants OWN");
		CHECK(name_cmd(u.fd, KDBUS_CMD_NAME_ACQUIRE, "com.example.other", 0, NULL) < 0 && errno == EPERM,
		      "other names stay refused");
		OK("policy holder: OWN granted to everybody");
		_exit(0);
	}
	int status;
	CHECK(waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0, "child");
	close(holder.fd);
	printf("signals: all checks passed\n");
	return 0;
}
