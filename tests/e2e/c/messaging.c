/* Unicast messaging between two connections: layout, calls and replies, timeouts, priorities,
 * PEEK/DROP, names, quotas.  usage: messaging MOUNT_ROOT */
#define _GNU_SOURCE
#include <poll.h>
#include <pthread.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#include "msgutil.h"

static uint64_t msgbuf[8192];

/* Send one message from `from` to `to` and receive it; the caller frees the slice. */
static struct kdbus_msg *round_trip(struct conn *from, struct conn *to, uint64_t cookie,
				    struct kdbus_cmd_recv *recv)
{
	struct kdbus_msg *m = build_msg(msgbuf, to->id, NULL, "x", 1, 0, cookie);
	CHECK(send_msg(from->fd, m, 0, NULL) == 0, "SEND %llu", (unsigned long long)cookie);
	CHECK(recv_msg(to, recv, 0, 0) == 0, "RECV %llu", (unsigned long long)cookie);
	return (void *)(to->pool + recv->msg.offset);
}

static int comm_is(const struct kdbus_msg *m, uint64_t type, const char *want)
{
	const struct kdbus_item *it = find_item(m, type);
	return it != NULL && strcmp(it->str, want) == 0;
}

struct thread_send {
	struct conn *from, *to;
	struct kdbus_cmd_recv recv;
	char leader[16];
};

/* A second thread with a name of its own sends: TID_COMM is its comm, PID_COMM its leader's. */
static void *send_from_thread(void *arg)
{
	struct thread_send *t = arg;
	CHECK(prctl(PR_SET_NAME, "msg-thread") == 0, "PR_SET_NAME in the thread");
	struct kdbus_msg *got = round_trip(t->from, t->to, 49, &t->recv);
	const struct kdbus_item *pids = find_item(got, KDBUS_ITEM_PIDS);
	CHECK(comm_is(got, KDBUS_ITEM_TID_COMM, "msg-thread") && comm_is(got, KDBUS_ITEM_PID_COMM, t->leader),
	      "a thread's TID_COMM and its leader's PID_COMM");
	CHECK(pids && pids->pids.tid == (uint64_t)gettid() && pids->pids.pid == (uint64_t)getpid(),
	      "a thread's PIDS");
	free_slice(t->to->fd, t->recv.msg.offset);
	return NULL;
}

int main(int argc, char **argv)
{
	const char *root = argc > 1 ? argv[1] : "/sys/fs/kdbus";
	char bus[64], suffix[32];
	struct conn a, b;
	struct kdbus_cmd_recv recv;
	struct kdbus_msg *m;
	uint64_t len;

	snprintf(suffix, sizeof(suffix), "msg%d", getpid());
	int control = make_bus(root, suffix, bus, sizeof(bus));
	hello(&a, root, bus, 0);
	hello(&b, root, bus, 0);
	free_slice(a.fd, a.hello.offset);
	free_slice(b.fd, b.hello.offset);

	/* poll: nothing queued yet. */
	struct pollfd pfd = { .fd = b.fd, .events = POLLIN };
	CHECK(poll(&pfd, 1, 0) == 0, "poll with an empty queue");
	EXPECT_ERRNO(EAGAIN, b.fd, KDBUS_CMD_RECV, (&(struct kdbus_cmd_recv){ .size = 64 }), "RECV on an empty queue");

	/* A plain message with a data vec and a NULL vec in between. */
	static const char hello_text[] = "hello, kdbus";
	m = build_msg(msgbuf, b.id, NULL, hello_text, sizeof(hello_text), 0, 42);
	{
		struct kdbus_item *it = (void *)((uint8_t *)m + m->size);
		it->type = KDBUS_ITEM_PAYLOAD_VEC;
		it->size = KDBUS_ITEM_HEADER_SIZE + sizeof(struct kdbus_vec);
		it->vec.address = 0;
		it->vec.size = 3;
		m->size += KDBUS_ALIGN8(it->size);
		it = KDBUS_ITEM_NEXT(it);
		it->type = KDBUS_ITEM_PAYLOAD_VEC;
		it->size = KDBUS_ITEM_HEADER_SIZE + sizeof(struct kdbus_vec);
		it->vec.address = (uintptr_t)"tail";
		it->vec.size = 4;
		m->size += KDBUS_ALIGN8(it->size);
	}
	CHECK(send_msg(a.fd, m, 0, NULL) == 0, "SEND a to b");
	OK("SEND unicast with three vecs");
	CHECK(poll(&pfd, 1, 1000) == 1 && (pfd.revents & POLLIN), "poll says POLLIN");
	OK("poll -> POLLIN");
	CHECK(recv_msg(&b, &recv, 0, 0) == 0, "RECV");
	struct kdbus_msg *got = (void *)(b.pool + recv.msg.offset);
	CHECK(got->src_id == a.id && got->dst_id == b.id && got->cookie == 42 &&
	      got->payload_type == KDBUS_PAYLOAD_DBUS, "received header");
	CHECK(recv.msg.msg_size >= got->size && recv.msg.msg_size % 8 == 0, "msg_size %llu vs size %llu",
	      (unsigned long long)recv.msg.msg_size, (unsigned long long)got->size);
	{
		const struct kdbus_item *it;
		int n = 0;
		uint64_t offs[3] = {0}, sizes[3] = {0};
		KDBUS_FOREACH(it, got->items, got->size - offsetof(struct kdbus_msg, items))
			if (it->type == KDBUS_ITEM_PAYLOAD_OFF && n < 3) {
				offs[n] = it->vec.offset;
				sizes[n++] = it->vec.size;
			}
		CHECK(n == 3, "three PAYLOAD_OFF items, got %d", n);
		CHECK(sizes[0] == sizeof(hello_text) && memcmp((uint8_t *)got + offs[0], hello_text, sizes[0]) == 0,
		      "first vec's bytes");
		CHECK(offs[1] == ~0ULL && sizes[1] == 3, "NULL vec offset ~0");
		/* Data vecs follow each other; a NULL vec adds size % 8 zeros. */
		CHECK(offs[2] == offs[0] + sizes[0] + 3 && memcmp((uint8_t *)got + offs[2], "tail", 4) == 0,
		      "third vec at %llu (first at %llu)", (unsigned long long)offs[2], (unsigned long long)offs[0]);
		CHECK(offs[0] % 8 == 0 && offs[0] >= KDBUS_ALIGN8(got->size), "payload after the header");
	}
	CHECK(free_slice(b.fd, recv.msg.offset) == 0, "FREE message");
	OK("layout: PAYLOAD_OFF offsets, NULL vec, bytes");

	/* Metadata b asked for (attach_flags_recv = ALL): creds, pids, timestamp. */
	m = build_msg(msgbuf, b.id, NULL, "x", 1, 0, 43);
	CHECK(send_msg(a.fd, m, 0, NULL) == 0, "SEND for metadata");
	CHECK(recv_msg(&b, &recv, 0, 0) == 0, "RECV metadata message");
	got = (void *)(b.pool + recv.msg.offset);
	const struct kdbus_item *creds = find_item(got, KDBUS_ITEM_CREDS);
	const struct kdbus_item *pids = find_item(got, KDBUS_ITEM_PIDS);
	const struct kdbus_item *ts = find_item(got, KDBUS_ITEM_TIMESTAMP);
	CHECK(creds && creds->creds.euid == geteuid() && creds->creds.uid == getuid(), "CREDS item");
	CHECK(pids && pids->pids.pid == (uint64_t)getpid(), "PIDS item");
	CHECK(ts && ts->timestamp.seqnum > 0 && ts->timestamp.monotonic_ns > 0, "TIMESTAMP item");
	CHECK(find_item(got, KDBUS_ITEM_PID_COMM) != NULL, "PID_COMM item");
	free_slice(b.fd, recv.msg.offset);
	OK("metadata: CREDS, PIDS, PID_COMM, TIMESTAMP");

	/* kdbus takes creds and comms from the sender at each SEND: a change between two messages
	 * shows in the second (a comm with a backslash too, which /proc's status escapes). */
	char own_comm[16] = "";
	CHECK(prctl(PR_GET_NAME, own_comm) == 0, "PR_GET_NAME");
	const char *names[] = { "renamed", "back\\slash", own_comm };
	for (unsigned i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		CHECK(prctl(PR_SET_NAME, names[i]) == 0, "PR_SET_NAME %s", names[i]);
		got = round_trip(&a, &b, 44 + i, &recv);
		CHECK(comm_is(got, KDBUS_ITEM_TID_COMM, names[i]) && comm_is(got, KDBUS_ITEM_PID_COMM, names[i]),
		      "TID_COMM and PID_COMM after renaming to %s", names[i]);
		free_slice(b.fd, recv.msg.offset);
	}
	if (geteuid() == 0) {
		gid_t egid = getegid();
		CHECK(setegid(4242) == 0, "setegid");
		got = round_trip(&a, &b, 47, &recv);
		CHECK(setegid(egid) == 0, "setegid back");
		creds = find_item(got, KDBUS_ITEM_CREDS);
		CHECK(creds && creds->creds.egid == 4242 && creds->creds.fsgid == 4242 && creds->creds.gid == egid,
		      "CREDS after setegid");
		free_slice(b.fd, recv.msg.offset);
		got = round_trip(&a, &b, 48, &recv);
		creds = find_item(got, KDBUS_ITEM_CREDS);
		CHECK(creds && creds->creds.egid == egid, "CREDS after setegid back");
		free_slice(b.fd, recv.msg.offset);
	}
	{
		struct thread_send t = { .from = &a, .to = &b };
		pthread_t thread;
		memcpy(t.leader, own_comm, sizeof(t.leader));
		CHECK(pthread_create(&thread, NULL, send_from_thread, &t) == 0, "pthread_create");
		CHECK(pthread_join(thread, NULL) == 0, "pthread_join");
	}
	OK("metadata: creds and comms as they are at each SEND");

	/* Priorities: lowest value first, only up to the limit asked for. */
	int64_t prios[] = { 25, -600, 10, -35, -100, 20, -15, -800, -150, 10, -800, -10 };
	for (unsigned i = 0; i < sizeof(prios) / sizeof(prios[0]); i++) {
		m = build_msg(msgbuf, b.id, NULL, NULL, 0, 0, 100 + i);
		m->priority = prios[i];
		CHECK(send_msg(a.fd, m, 0, NULL) == 0, "SEND prio %lld", (long long)prios[i]);
	}
	struct { int64_t limit; int64_t want; } steps[] = {
		{ -200, -800 }, { -100, -800 }, { -400, -600 }, { -400, 1 }, { 10, -150 }, { 10, -100 } };
	for (unsigned i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
		int r = recv_msg(&b, &recv, KDBUS_RECV_USE_PRIORITY, steps[i].limit);
		if (steps[i].want == 1) {
			CHECK(r < 0 && errno == EAGAIN, "RECV prio <= %lld: EAGAIN", (long long)steps[i].limit);
			continue;
		}
		got = (void *)(b.pool + recv.msg.offset);
		CHECK(r == 0 && got->priority == steps[i].want, "RECV prio <= %lld -> %lld",
		      (long long)steps[i].limit, (long long)got->priority);
		free_slice(b.fd, recv.msg.offset);
	}
	/* Drain the rest in FIFO order. */
	int rest = 0;
	while (recv_msg(&b, &recv, 0, 0) == 0) {
		rest++;
		free_slice(b.fd, recv.msg.offset);
	}
	CHECK(rest == 7 && errno == EAGAIN, "FIFO drain got %d", rest);
	OK("priorities as in kdbus's message-prio test");

	/* PEEK leaves the message queued; DROP removes it. */
	m = build_msg(msgbuf, b.id, NULL, "p", 1, 0, 7);
	CHECK(send_msg(a.fd, m, 0, NULL) == 0, "SEND for peek");
	CHECK(recv_msg(&b, &recv, KDBUS_RECV_PEEK, 0) == 0, "PEEK");
	uint64_t peeked = recv.msg.offset;
	CHECK(free_slice(b.fd, peeked) == 0, "FREE after PEEK");
	CHECK(recv_msg(&b, &recv, KDBUS_RECV_PEEK, 0) == 0 && recv.msg.offset == peeked, "PEEK again, same offset");
	CHECK(recv_msg(&b, &recv, KDBUS_RECV_DROP, 0) == 0, "DROP");
	CHECK(free_slice(b.fd, peeked) == 0, "FREE the peeked slice after DROP");
	EXPECT_ERRNO(EAGAIN, b.fd, KDBUS_CMD_RECV, (&(struct kdbus_cmd_recv){ .size = 64 }), "RECV after DROP");
	EXPECT_ERRNO(EINVAL, b.fd, KDBUS_CMD_RECV,
		     (&(struct kdbus_cmd_recv){ .size = 64, .flags = KDBUS_RECV_DROP | KDBUS_RECV_USE_PRIORITY }),
		     "RECV DROP|USE_PRIORITY");
	OK("PEEK and DROP");

	/* Calls and replies. */
	m = build_msg(msgbuf, b.id, NULL, "call", 4, KDBUS_MSG_EXPECT_REPLY, 500);
	m->timeout_ns = now_ns() + 5000000000ULL;
	CHECK(send_msg(a.fd, m, 0, NULL) == 0, "SEND call");
	CHECK(recv_msg(&b, &recv, 0, 0) == 0, "RECV call");
	got = (void *)(b.pool + recv.msg.offset);
	CHECK(got->flags & KDBUS_MSG_EXPECT_REPLY && got->cookie == 500, "call flags");
	free_slice(b.fd, recv.msg.offset);
	m = build_msg(msgbuf, a.id, NULL, "reply", 5, 0, 501);
	m->cookie_reply = 999;
	EXPECT_ERRNO(EBADSLT, b.fd, KDBUS_CMD_SEND, (&(struct kdbus_cmd_send){ .size = 56, .msg_address = (uintptr_t)m }),
		     "reply to an unknown cookie");
	m->cookie_reply = 500;
	CHECK(send_msg(b.fd, m, 0, NULL) == 0, "SEND reply");
	EXPECT_ERRNO(EBADSLT, b.fd, KDBUS_CMD_SEND, (&(struct kdbus_cmd_send){ .size = 56, .msg_address = (uintptr_t)m }),
		     "second reply");
	CHECK(recv_msg(&a, &recv, 0, 0) == 0, "RECV reply");
	got = (void *)(a.pool + recv.msg.offset);
	CHECK(got->cookie_reply == 500 && got->src_id == b.id, "reply header");
	free_slice(a.fd, recv.msg.offset);
	OK("call, reply, EBADSLT");

	/* An unanswered call times out with a REPLY_TIMEOUT notification. */
	m = build_msg(msgbuf, b.id, NULL, NULL, 0, KDBUS_MSG_EXPECT_REPLY, 600);
	m->timeout_ns = now_ns() + 100000000ULL;
	CHECK(send_msg(a.fd, m, 0, NULL) == 0, "SEND call to time out");
	pfd.fd = a.fd;
	CHECK(poll(&pfd, 1, 3000) == 1 && (pfd.revents & POLLIN), "caller wakes for the timeout");
	CHECK(recv_msg(&a, &recv, 0, 0) == 0, "RECV timeout notification");
	got = (void *)(a.pool + recv.msg.offset);
	CHECK(got->src_id == KDBUS_SRC_ID_KERNEL && got->cookie_reply == 600 &&
	      got->items[0].type == KDBUS_ITEM_REPLY_TIMEOUT && got->payload_type == KDBUS_PAYLOAD_KERNEL,
	      "REPLY_TIMEOUT notification (type %llx)", (unsigned long long)got->items[0].type);
	CHECK(find_item(got, KDBUS_ITEM_TIMESTAMP) != NULL, "notification carries a TIMESTAMP");
	free_slice(a.fd, recv.msg.offset);
	CHECK(recv_msg(&b, &recv, KDBUS_RECV_DROP, 0) == 0, "drop the unanswered call");
	OK("REPLY_TIMEOUT");

	/* A dropped call answers REPLY_DEAD. */
	m = build_msg(msgbuf, b.id, NULL, NULL, 0, KDBUS_MSG_EXPECT_REPLY, 700);
	m->timeout_ns = now_ns() + 5000000000ULL;
	CHECK(send_msg(a.fd, m, 0, NULL) == 0, "SEND call to drop");
	CHECK(recv_msg(&b, &recv, KDBUS_RECV_DROP, 0) == 0, "DROP the call");
	CHECK(recv_msg(&a, &recv, 0, 0) == 0, "RECV REPLY_DEAD");
	got = (void *)(a.pool + recv.msg.offset);
	CHECK(got->cookie_reply == 700 && got->items[0].type == KDBUS_ITEM_REPLY_DEAD, "REPLY_DEAD notification");
	free_slice(a.fd, recv.msg.offset);
	OK("REPLY_DEAD on DROP");

	/* Message syntax errors. */
	m = build_msg(msgbuf, b.id, NULL, NULL, 0, 0, 1);
	m->payload_type = 0;
	EXPECT_ERRNO(EINVAL, a.fd, KDBUS_CMD_SEND, (&(struct kdbus_cmd_send){ .size = 56, .msg_address = (uintptr_t)m }), "payload type 0");
	m = build_msg(msgbuf, 0, NULL, NULL, 0, 0, 1);
	EXPECT_ERRNO(EDESTADDRREQ, a.fd, KDBUS_CMD_SEND, (&(struct kdbus_cmd_send){ .size = 56, .msg_address = (uintptr_t)m }), "no destination");
	m = build_msg(msgbuf, 999999, NULL, NULL, 0, 0, 1);
	EXPECT_ERRNO(ENXIO, a.fd, KDBUS_CMD_SEND, (&(struct kdbus_cmd_send){ .size = 56, .msg_address = (uintptr_t)m }), "unknown destination id");
	m = build_msg(msgbuf, b.id, NULL, NULL, 0, KDBUS_MSG_EXPECT_REPLY, 1);
	EXPECT_ERRNO(EINVAL, a.fd, KDBUS_CMD_SEND, (&(struct kdbus_cmd_send){ .size = 56, .msg_address = (uintptr_t)m }), "EXPECT_REPLY without timeout");
	m = build_msg(msgbuf, KDBUS_DST_ID_BROADCAST, NULL, NULL, 0, 0, 1);
	EXPECT_ERRNO(EBADMSG, a.fd, KDBUS_CMD_SEND, (&(struct kdbus_cmd_send){ .size = 56, .msg_address = (uintptr_t)m }), "broadcast without SIGNAL");
	m = build_msg(msgbuf, b.id, NULL, (void *)8, 16, 0, 1);
	EXPECT_ERRNO(EFAULT, a.fd, KDBUS_CMD_SEND, (&(struct kdbus_cmd_send){ .size = 56, .msg_address = (uintptr_t)m }), "vec at an unmapped address");
	m = build_msg(msgbuf, b.id, NULL, (void *)0xffffffff81000000ULL, 16, 0, 1);
	EXPECT_ERRNO(EFAULT, a.fd, KDBUS_CMD_SEND, (&(struct kdbus_cmd_send){ .size = 56, .msg_address = (uintptr_t)m }), "vec at a kernel address");
	m = build_msg(msgbuf, b.id, NULL, msgbuf, 3 * 1024 * 1024, 0, 1);
	EXPECT_ERRNO(EMSGSIZE, a.fd, KDBUS_CMD_SEND, (&(struct kdbus_cmd_send){ .size = 56, .msg_address = (uintptr_t)m }), "vecs over 2 MiB");
	EXPECT_ERRNO(EFAULT, a.fd, KDBUS_CMD_SEND, (&(struct kdbus_cmd_send){ .size = 56, .msg_address = 12 }), "unaligned msg_address");
	CHECK(recv_msg(&b, &recv, 0, 0) < 0 && errno == EAGAIN, "nothing was delivered by the failed sends");
	OK("message errors");

	/* A negotiating SEND negotiates its message too: flags and item types come back. */
	{
		uint64_t nbuf[64] = {0};
		struct kdbus_msg *nm = (void *)nbuf;
		struct kdbus_item *it = nm->items;
		it->type = KDBUS_ITEM_NEGOTIATE;
		it->size = KDBUS_ITEM_HEADER_SIZE + 2 * sizeof(uint64_t);
		it->data64[0] = KDBUS_ITEM_PAYLOAD_VEC;
		it->data64[1] = 0x7777;
		nm->size = sizeof(*nm) + it->size;
		nm->flags = KDBUS_FLAG_NEGOTIATE;
		nm->payload_type = KDBUS_PAYLOAD_DBUS;
		struct kdbus_cmd_send ns = { .size = sizeof(ns), .flags = KDBUS_FLAG_NEGOTIATE,
					     .msg_address = (uintptr_t)nm };
		CHECK(ioctl(a.fd, KDBUS_CMD_SEND, &ns) == 0, "negotiating SEND");
		CHECK(ns.flags == KDBUS_SEND_SYNC_REPLY && nm->flags == 7, "flags negotiated (%llx, %llx)",
		      (unsigned long long)ns.flags, (unsigned long long)nm->flags);
		CHECK(it->data64[0] == KDBUS_ITEM_PAYLOAD_VEC && it->data64[1] == 0, "unknown item type zeroed");
		nm->flags = KDBUS_FLAG_NEGOTIATE;
		ns.flags = 0;
		EXPECT_ERRNO(EINVAL, a.fd, KDBUS_CMD_SEND, &ns, "negotiating message without negotiating SEND");
	}
	OK("SEND negotiation");

	/* Names: the bus creator owns what it likes. */
	uint64_t rf;
	CHECK(name_cmd(a.fd, KDBUS_CMD_NAME_ACQUIRE, "com.example.test", KDBUS_NAME_ALLOW_REPLACEMENT, &rf) == 0, "acquire");
	CHECK(rf & KDBUS_NAME_ACQUIRED && rf & KDBUS_NAME_PRIMARY, "acquire return flags %llx", (unsigned long long)rf);
	CHECK(name_cmd(b.fd, KDBUS_CMD_NAME_ACQUIRE, "com.example.test", 0, &rf) < 0 && errno == EEXIST, "taken name -> EEXIST");
	CHECK(name_cmd(b.fd, KDBUS_CMD_NAME_ACQUIRE, "com.example.test", KDBUS_NAME_QUEUE, &rf) == 0 &&
	      (rf & KDBUS_NAME_IN_QUEUE) && (rf & KDBUS_NAME_ACQUIRED), "queue for the name (%llx)", (unsigned long long)rf);
	CHECK(name_cmd(b.fd, KDBUS_CMD_NAME_ACQUIRE, "foo", 0, NULL) < 0 && errno == EINVAL, "invalid name");
	CHECK(name_cmd(b.fd, KDBUS_CMD_NAME_RELEASE, "com.example.none", 0, NULL) < 0 && errno == ESRCH, "release unknown");
	m = build_msg(msgbuf, 0, "com.example.test", "byname", 6, 0, 800);
	CHECK(send_msg(b.fd, m, 0, NULL) == 0, "SEND by name");
	CHECK(recv_msg(&a, &recv, 0, 0) == 0, "RECV by name");
	got = (void *)(a.pool + recv.msg.offset);
	CHECK(got->dst_id == 0 && got->cookie == 800, "dst_id stays 0 when sent by name");
	free_slice(a.fd, recv.msg.offset);
	m = build_msg(msgbuf, b.id, "com.example.test", NULL, 0, 0, 801);
	EXPECT_ERRNO(EREMCHG, b.fd, KDBUS_CMD_SEND, (&(struct kdbus_cmd_send){ .size = 56, .msg_address = (uintptr_t)m }), "name owned by someone else");
	m = build_msg(msgbuf, 0, "com.example.nobody", NULL, 0, 0, 802);
	EXPECT_ERRNO(ESRCH, b.fd, KDBUS_CMD_SEND, (&(struct kdbus_cmd_send){ .size = 56, .msg_address = (uintptr_t)m }), "name without owner");
	{
		uint64_t buf[64] = {0};
		struct kdbus_cmd_info *info = (void *)buf;
		struct kdbus_item *it = info->items;
		it->type = KDBUS_ITEM_NAME;
		it->size = KDBUS_ITEM_HEADER_SIZE + strlen("com.example.test") + 1;
		strcpy(it->str, "com.example.test");
		info->size = sizeof(*info) + KDBUS_ALIGN8(it->size);
		CHECK(ioctl(b.fd, KDBUS_CMD_CONN_INFO, info) == 0, "CONN_INFO by name");
		CHECK(((struct kdbus_info *)(b.pool + info->offset))->id == a.id, "CONN_INFO by name finds a");
		free_slice(b.fd, info->offset);
	}
	{
		struct kdbus_cmd_list list = { .size = sizeof(list), .flags = KDBUS_LIST_NAMES | KDBUS_LIST_QUEUED };
		CHECK(ioctl(a.fd, KDBUS_CMD_LIST, &list) == 0, "LIST names");
		int owners = 0, queued = 0;
		for (uint64_t off = 0; off < list.list_size;) {
			struct kdbus_info *i = (void *)(a.pool + list.offset + off);
			if (i->size > sizeof(*i) && i->items[0].type == KDBUS_ITEM_OWNED_NAME &&
			    strcmp((const char *)i->items[0].data + 8, "com.example.test") == 0) {
				if (i->id == a.id && (i->items[0].name.flags & KDBUS_NAME_PRIMARY))
					owners++;
				if (i->id == b.id && (i->items[0].name.flags & KDBUS_NAME_IN_QUEUE))
					queued++;
			}
			off += KDBUS_ALIGN8(i->size);
		}
		CHECK(owners == 1 && queued == 1, "LIST shows owner and queued waiter (%d, %d)", owners, queued);
		free_slice(a.fd, list.offset);
	}
	/* Release hands the name to the queued waiter. */
	CHECK(name_cmd(a.fd, KDBUS_CMD_NAME_RELEASE, "com.example.test", 0, NULL) == 0, "release");
	m = build_msg(msgbuf, 0, "com.example.test", NULL, 0, 0, 803);
	CHECK(send_msg(a.fd, m, 0, NULL) == 0, "SEND to the new owner");
	CHECK(recv_msg(&b, &recv, 0, 0) == 0, "the waiter owns the name now");
	free_slice(b.fd, recv.msg.offset);
	CHECK(name_cmd(a.fd, KDBUS_CMD_NAME_RELEASE, "com.example.test", 0, NULL) < 0 && errno == EADDRINUSE,
	      "release by a non-owner -> EADDRINUSE");
	OK("names: acquire, queue, DST_NAME, EREMCHG, ESRCH, CONN_INFO, LIST, hand-over");

	/* Synchronous call: a child answers. */
	pid_t child = fork();
	CHECK(child >= 0, "fork");
	if (child == 0) {
		struct pollfd p = { .fd = b.fd, .events = POLLIN };
		if (poll(&p, 1, 5000) != 1 || recv_msg(&b, &recv, 0, 0) != 0)
			_exit(1);
		struct kdbus_msg *call = (void *)(b.pool + recv.msg.offset);
		uint64_t cookie = call->cookie;
		free_slice(b.fd, recv.msg.offset);
		struct kdbus_msg *r = build_msg(msgbuf, a.id, NULL, "pong", 4, 0, 901);
		r->cookie_reply = cookie;
		_exit(send_msg(b.fd, r, 0, NULL) == 0 ? 0 : 2);
	}
	m = build_msg(msgbuf, b.id, NULL, "ping", 4, KDBUS_MSG_EXPECT_REPLY, 900);
	m->timeout_ns = now_ns() + 5000000000ULL;
	struct kdbus_cmd_send sent;
	CHECK(send_msg(a.fd, m, KDBUS_SEND_SYNC_REPLY, &sent) == 0, "sync call");
	got = (void *)(a.pool + sent.reply.offset);
	CHECK(sent.reply.msg_size > 0 && got->cookie_reply == 900 && payload_of(got, &len) &&
	      len == 4 && memcmp(payload_of(got, &len), "pong", 4) == 0, "sync reply in the pool");
	free_slice(a.fd, sent.reply.offset);
	int status;
	CHECK(waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0, "replier child");
	CHECK(recv_msg(&a, &recv, 0, 0) < 0 && errno == EAGAIN, "the sync reply was not queued");
	OK("synchronous call");

	/* A sync call nobody answers times out with ETIMEDOUT and no notification. */
	m = build_msg(msgbuf, b.id, NULL, NULL, 0, KDBUS_MSG_EXPECT_REPLY, 950);
	m->timeout_ns = now_ns() + 200000000ULL;
	EXPECT_ERRNO(ETIMEDOUT, a.fd, KDBUS_CMD_SEND,
		     (&(struct kdbus_cmd_send){ .size = 56, .flags = KDBUS_SEND_SYNC_REPLY, .msg_address = (uintptr_t)m }),
		     "sync call that times out");
	CHECK(recv_msg(&a, &recv, 0, 0) < 0 && errno == EAGAIN, "no REPLY_TIMEOUT for a sync call");
	recv_msg(&b, &recv, KDBUS_RECV_DROP, 0);
	m->timeout_ns = now_ns() - 1;
	EXPECT_ERRNO(ETIMEDOUT, a.fd, KDBUS_CMD_SEND,
		     (&(struct kdbus_cmd_send){ .size = 56, .flags = KDBUS_SEND_SYNC_REPLY, .msg_address = (uintptr_t)m }),
		     "sync call past its deadline");

	/* BYEBYE refuses while messages wait. */
	m = build_msg(msgbuf, b.id, NULL, NULL, 0, 0, 990);
	CHECK(send_msg(a.fd, m, 0, NULL) == 0, "SEND before BYEBYE");
	EXPECT_ERRNO(EBUSY, b.fd, KDBUS_CMD_BYEBYE, (&(struct kdbus_cmd){ .size = 24 }), "BYEBYE with a queued message");

	close(a.fd);
	close(b.fd);
	close(control);
	printf("messaging: all checks passed\n");
	return 0;
}
