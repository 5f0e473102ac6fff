/* Passing descriptors: FDS and PAYLOAD_MEMFD are checked as kdbus checks them, and since kdbusfs
 * cannot install descriptors in a receiver, they arrive as -1 with KDBUS_RECV_RETURN_INCOMPLETE_FDS.
 * CANCEL_FD ends a synchronous call with ECANCELED: it is fired once the call has reached its callee
 * and the caller is seen blocked in the daemon (blocked.h), never after a sleep.  usage: fds MOUNT_ROOT */
#define _GNU_SOURCE
#include <poll.h>
#include <pthread.h>
#include <sys/wait.h>
#include <sys/eventfd.h>
#include <sys/socket.h>

#include "blocked.h"

static uint64_t msgbuf[4096];

static struct kdbus_msg *with_item(struct kdbus_msg *m, uint64_t type, const void *payload, size_t len)
{
	struct kdbus_item *it = (void *)((uint8_t *)m + KDBUS_ALIGN8(m->size));
	it->type = type;
	it->size = KDBUS_ITEM_HEADER_SIZE + len;
	memcpy(it->data, payload, len);
	m->size = KDBUS_ALIGN8(m->size) + it->size;
	return m;
}

static int send_err(int fd, struct kdbus_msg *m)
{
	errno = 0;
	return send_msg(fd, m, 0, NULL) < 0 ? errno : 0;
}

/* Fire the CANCEL_FD only once the call has reached the callee and the caller sleeps in the daemon:
 * the daemon must then wake a blocked call, not refuse an already-readable fd at the start. */
struct canceller {
	int efd;
	pid_t tid;
	struct conn *callee;
	uint64_t cookie;
};

static void *fire_cancel(void *arg)
{
	struct canceller *c = arg;
	uint64_t offset, one = 1;
	take_call(c->callee, c->cookie, &offset, "CANCEL_FD");
	CHECK(free_slice(c->callee->fd, offset) == 0, "FREE the call");
	wait_blocked(getpid(), c->tid, KDBUS_CMD_SEND, "S", 5000, "CANCEL_FD: caller blocked");
	CHECK(write(c->efd, &one, sizeof(one)) == sizeof(one), "fire the cancel fd");
	wait_unblocked(getpid(), c->tid, KDBUS_CMD_SEND, 5000, "CANCEL_FD: the blocked caller wakes");
	return NULL;
}

int main(int argc, char **argv)
{
	const char *root = argc > 1 ? argv[1] : "/sys/fs/kdbus";
	char bus[64], suffix[32];
	struct conn a, b, c;
	struct kdbus_cmd_recv recv;
	int p[2];

	snprintf(suffix, sizeof(suffix), "fds%d", getpid());
	int control = make_bus(root, suffix, bus, sizeof(bus));
	hello(&a, root, bus, KDBUS_HELLO_ACCEPT_FD);
	hello(&b, root, bus, 0);
	hello(&c, root, bus, 0);
	CHECK(pipe(p) == 0, "pipe");

	int fds[2] = { p[0], p[1] };
	struct kdbus_msg *m = with_item(build_msg(msgbuf, a.id, NULL, "f", 1, 0, 1), KDBUS_ITEM_FDS, fds, sizeof(fds));
	CHECK(send_err(c.fd, m) == 0, "SEND two pipe fds");
	CHECK(recv_msg(&a, &recv, 0, 0) == 0, "RECV");
	CHECK(recv.msg.return_flags & KDBUS_RECV_RETURN_INCOMPLETE_FDS, "INCOMPLETE_FDS reported");
	const struct kdbus_item *it = find_item((void *)(a.pool + recv.msg.offset), KDBUS_ITEM_FDS);
	CHECK(it && it->size == KDBUS_ITEM_HEADER_SIZE + 8 && it->fds[0] == -1 && it->fds[1] == -1, "fds read -1");
	free_slice(a.fd, recv.msg.offset);
	OK("FDS delivered as -1 with INCOMPLETE_FDS");

	m = with_item(build_msg(msgbuf, b.id, NULL, NULL, 0, 0, 2), KDBUS_ITEM_FDS, fds, sizeof(fds));
	CHECK(send_err(c.fd, m) == ECOMM, "fds to a connection without ACCEPT_FD -> ECOMM");
	int closed = 1000;
	m = with_item(build_msg(msgbuf, a.id, NULL, NULL, 0, 0, 3), KDBUS_ITEM_FDS, &closed, sizeof(closed));
	CHECK(send_err(c.fd, m) == EBADF, "closed fd -> EBADF");
	m = with_item(build_msg(msgbuf, a.id, NULL, NULL, 0, 0, 4), KDBUS_ITEM_FDS, &b.fd, sizeof(b.fd));
	CHECK(send_err(c.fd, m) == EOPNOTSUPP, "a kdbus fd -> EOPNOTSUPP");
	int sv[2];
	CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0, "socketpair");
	m = with_item(build_msg(msgbuf, a.id, NULL, NULL, 0, 0, 5), KDBUS_ITEM_FDS, sv, sizeof(int));
	CHECK(send_err(c.fd, m) == EOPNOTSUPP, "an AF_UNIX socket -> EOPNOTSUPP");
	int many[17];
	for (int i = 0; i < 17; i++)
		many[i] = p[0];
	m = with_item(build_msg(msgbuf, a.id, NULL, NULL, 0, 0, 6), KDBUS_ITEM_FDS, many, sizeof(many));
	CHECK(send_err(c.fd, m) == EMFILE, "17 fds -> EMFILE");
	OK("FDS checks: ECOMM, EBADF, EOPNOTSUPP, EMFILE");

	/* memfds */
	int mfd = memfd_create("kdbusfs-test", MFD_ALLOW_SEALING);
	CHECK(mfd >= 0 && write(mfd, "0123456789abcdef", 16) == 16, "memfd");
	struct kdbus_memfd mi = { .start = 0, .size = 11, .fd = mfd };
	m = with_item(build_msg(msgbuf, b.id, NULL, NULL, 0, 0, 7), KDBUS_ITEM_PAYLOAD_MEMFD, &mi, sizeof(mi));
	CHECK(send_err(c.fd, m) == ETXTBSY, "unsealed memfd -> ETXTBSY");
	CHECK(fcntl(mfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) == 0, "seal");
	CHECK(send_err(c.fd, m) == 0, "sealed memfd to a connection without ACCEPT_FD");
	CHECK(recv_msg(&b, &recv, 0, 0) == 0, "RECV memfd message");
	struct kdbus_msg *got = (void *)(b.pool + recv.msg.offset);
	it = find_item(got, KDBUS_ITEM_PAYLOAD_MEMFD);
	CHECK(it && it->memfd.size == 11 && it->memfd.start == 0 && it->memfd.fd == -1, "memfd item kept, fd -1");
	CHECK(recv.msg.return_flags & KDBUS_RECV_RETURN_INCOMPLETE_FDS, "INCOMPLETE_FDS for the memfd");
	free_slice(b.fd, recv.msg.offset);
	mi.size = 17;
	m = with_item(build_msg(msgbuf, b.id, NULL, NULL, 0, 0, 8), KDBUS_ITEM_PAYLOAD_MEMFD, &mi, sizeof(mi));
	CHECK(send_err(c.fd, m) == EFAULT, "memfd range past its end -> EFAULT");
	mi.size = 4;
	mi.fd = p[0];
	m = with_item(build_msg(msgbuf, b.id, NULL, NULL, 0, 0, 9), KDBUS_ITEM_PAYLOAD_MEMFD, &mi, sizeof(mi));
	CHECK(send_err(c.fd, m) == EMEDIUMTYPE, "a pipe as memfd -> EMEDIUMTYPE");
	mi.fd = -1;
	m = with_item(build_msg(msgbuf, b.id, NULL, NULL, 0, 0, 10), KDBUS_ITEM_PAYLOAD_MEMFD, &mi, sizeof(mi));
	CHECK(send_err(c.fd, m) == EBADF, "negative memfd fd -> EBADF");
	OK("memfd checks: ETXTBSY, EFAULT, EMEDIUMTYPE, EBADF");

	/* Broadcasts may not carry fds. */
	{
		uint64_t bloom[9] = { 0 };
		m = build_msg(msgbuf, KDBUS_DST_ID_BROADCAST, NULL, NULL, 0, KDBUS_MSG_SIGNAL, 11);
		m = with_item(m, KDBUS_ITEM_BLOOM_FILTER, bloom, sizeof(bloom));
		m = with_item(m, KDBUS_ITEM_FDS, fds, sizeof(int));
		CHECK(send_err(c.fd, m) == ENOTUNIQ, "broadcast with fds -> ENOTUNIQ");
	}

	/* CANCEL_FD */
	int cancel_efd = eventfd(0, EFD_CLOEXEC);
	CHECK(cancel_efd >= 0, "eventfd");
	uint64_t cmdbuf[64] = {0};
	struct kdbus_cmd_send *cmd = (void *)cmdbuf;
	m = build_msg(msgbuf, b.id, NULL, NULL, 0, KDBUS_MSG_EXPECT_REPLY, 20);
	m->timeout_ns = now_ns() + 10000000000ULL;
	cmd->size = sizeof(*cmd) + KDBUS_ALIGN8(KDBUS_ITEM_HEADER_SIZE + sizeof(int));
	cmd->flags = KDBUS_SEND_SYNC_REPLY;
	cmd->msg_address = (uintptr_t)m;
	struct kdbus_item *cancel_item = (void *)((uint8_t *)cmd + sizeof(*cmd));
	cancel_item->type = KDBUS_ITEM_CANCEL_FD;
	cancel_item->size = KDBUS_ITEM_HEADER_SIZE + sizeof(int);
	memcpy((uint8_t *)cancel_item + KDBUS_ITEM_HEADER_SIZE, &cancel_efd, sizeof(int));
	struct canceller canceller = { .efd = cancel_efd, .tid = gettid(), .callee = &b, .cookie = 20 };
	pthread_t thread;
	CHECK(pthread_create(&thread, NULL, fire_cancel, &canceller) == 0, "pthread_create");
	uint64_t t0 = now_ns();
	errno = 0;
	CHECK(ioctl(c.fd, KDBUS_CMD_SEND, cmd) < 0 && errno == ECANCELED, "blocked sync call cancelled -> ECANCELED");
	CHECK(now_ns() - t0 < 5000000000ULL, "cancelled promptly");
	pthread_join(thread, NULL);
	struct kdbus_msg *r = build_msg(msgbuf + 2048, c.id, NULL, NULL, 0, 0, 21);
	r->cookie_reply = 20;
	CHECK(send_err(b.fd, r) == EBADSLT, "late reply after cancel -> EBADSLT");
	OK("CANCEL_FD -> ECANCELED, late reply EBADSLT");
	int closed_fd = 999;
	memcpy((uint8_t *)cancel_item + KDBUS_ITEM_HEADER_SIZE, &closed_fd, sizeof(int));
	CHECK(ioctl(c.fd, KDBUS_CMD_SEND, cmd) < 0 && errno == EBADF, "closed cancel fd -> EBADF");
	char path[64];
	snprintf(path, sizeof(path), "/proc/self/exe");
	int regular = open(path, O_RDONLY | O_CLOEXEC);
	memcpy((uint8_t *)cancel_item + KDBUS_ITEM_HEADER_SIZE, &regular, sizeof(int));
	CHECK(ioctl(c.fd, KDBUS_CMD_SEND, cmd) < 0 && errno == EINVAL, "unpollable cancel fd -> EINVAL");
	OK("CANCEL_FD checks");

	/* A synchronous reply with fds to a caller that does not take fds: the replier gets ECOMM,
	 * the caller EREMOTEIO. */
	pid_t child = fork();
	CHECK(child >= 0, "fork");
	if (child == 0) {
		struct pollfd pa = { .fd = a.fd, .events = POLLIN };
		struct kdbus_cmd_recv r2;
		if (poll(&pa, 1, 5000) != 1 || recv_msg(&a, &r2, 0, 0) != 0)
			_exit(1);
		struct kdbus_msg *call = (void *)(a.pool + r2.msg.offset);
		struct kdbus_msg *ans = with_item(build_msg(msgbuf + 1024, c.id, NULL, NULL, 0, 0, 31),
						  KDBUS_ITEM_FDS, fds, sizeof(int));
		ans->cookie_reply = call->cookie;
		_exit(send_err(a.fd, ans) == ECOMM ? 0 : 2);
	}
	m = build_msg(msgbuf, a.id, NULL, NULL, 0, KDBUS_MSG_EXPECT_REPLY, 30);
	m->timeout_ns = now_ns() + 5000000000ULL;
	errno = 0;
	CHECK(send_msg(c.fd, m, KDBUS_SEND_SYNC_REPLY, NULL) < 0 && errno == EREMOTEIO, "caller -> EREMOTEIO");
	int status;
	CHECK(waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0,
	      "replier got ECOMM");
	OK("sync reply with fds to a caller without ACCEPT_FD: ECOMM / EREMOTEIO");

	/* Calls with a CANCEL_FD answered at once, many times: the daemon must not trip over a cancel
	 * fd whose call is already over when it would start watching it. */
	child = fork();
	CHECK(child >= 0, "fork");
	if (child == 0) {
		struct pollfd pa = { .fd = a.fd, .events = POLLIN };
		for (int n = 0; n < 40; n++) {
			struct kdbus_cmd_recv r3;
			while (recv_msg(&a, &r3, 0, 0) < 0)
				if (poll(&pa, 1, 5000) != 1)
					_exit(1);
			struct kdbus_msg *call = (void *)(a.pool + r3.msg.offset);
			struct kdbus_msg *ans = build_msg(msgbuf + 1024, call->src_id, NULL, NULL, 0, 0, 50);
			ans->cookie_reply = call->cookie;
			free_slice(a.fd, r3.msg.offset);
			if (send_err(a.fd, ans) != 0)
				_exit(2);
		}
		_exit(0);
	}
	memcpy((uint8_t *)cancel_item + KDBUS_ITEM_HEADER_SIZE, &cancel_efd, sizeof(int));
	uint64_t drain;
	if (read(cancel_efd, &drain, sizeof(drain)) < 0)
		drain = 0;
	for (int n = 0; n < 40; n++) {
		m = build_msg(msgbuf, a.id, NULL, NULL, 0, KDBUS_MSG_EXPECT_REPLY, 100 + n);
		m->timeout_ns = now_ns() + 5000000000ULL;
		cmd->msg_address = (uintptr_t)m;
		CHECK(ioctl(c.fd, KDBUS_CMD_SEND, cmd) == 0, "fast call %d with a cancel fd", n);
		free_slice(c.fd, cmd->reply.offset);
	}
	CHECK(waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0, "fast replier");
	OK("40 calls with a cancel fd answered at once");

	close(control);
	printf("fds: all checks passed\n");
	return 0;
}
