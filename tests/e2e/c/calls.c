/* Synchronous calls at their edges: EPIPE, a handled signal, a killed caller, ECONNRESET from another
 * thread, and a receiver that never reads until its quota is full.  usage: calls MOUNT_ROOT
 *
 * Nothing here waits for a caller by sleeping: each case first sees the call arrive at its callee
 * and the caller asleep in the daemon (blocked.h) before it signals, kills or says BYEBYE. */
#define _GNU_SOURCE
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>

#include "blocked.h"

static uint64_t msgbuf[8192];
static const char *root_path;
static char bus[64];

static int sync_call(struct conn *from, uint64_t to, uint64_t cookie, uint64_t timeout_ms)
{
	uint64_t buf[512];
	struct kdbus_msg *m = build_msg(buf, to, NULL, NULL, 0, KDBUS_MSG_EXPECT_REPLY, cookie);
	m->timeout_ns = now_ns() + timeout_ms * 1000000ULL;
	return send_msg(from->fd, m, KDBUS_SEND_SYNC_REPLY, NULL);
}

static volatile int alarms;
static void on_alarm(int sig) { (void)sig; alarms++; }

/* An ioctl the daemon must serve after any INTERRUPT queued before it (the kernel hands the daemon
 * interrupts ahead of requests): once it returns, the daemon has seen the signal. */
static void round_trip(struct conn *c, const char *what)
{
	struct kdbus_cmd_recv recv;
	errno = 0;
	CHECK(recv_msg(c, &recv, 0, 0) < 0 && errno == EAGAIN, "%s: nothing else queued", what);
}

/* The other side of the handled-signal cases, on a thread of its own: wait for the call, see the
 * caller blocked, signal it, see the kernel take the signal in the FUSE wait ('D'), let the daemon
 * serve the INTERRUPT, see the caller still blocked, then reply (or let the call time out). */
struct signaller {
	pid_t tid;
	struct conn *callee;
	uint64_t cookie;
	int reply;              /* else the call runs to its deadline */
	uint64_t deadline;
	pthread_t thread;
};

static void *signal_blocked_caller(void *arg)
{
	struct signaller *s = arg;
	uint64_t offset;
	struct kdbus_msg *call = take_call(s->callee, s->cookie, &offset, "handled signal");
	uint64_t src = call->src_id;
	CHECK(free_slice(s->callee->fd, offset) == 0, "FREE the call");
	wait_blocked(getpid(), s->tid, KDBUS_CMD_SEND, "S", 5000, "caller blocked before the signal");
	CHECK(pthread_kill(s->thread, SIGALRM) == 0, "pthread_kill");
	wait_blocked(getpid(), s->tid, KDBUS_CMD_SEND, "D", 5000, "caller took the signal in the FUSE wait");
	round_trip(s->callee, "after the signal");
	wait_blocked(getpid(), s->tid, KDBUS_CMD_SEND, "D", 1000,
		     "the daemon served the INTERRUPT and the caller still waits");
	if (s->reply) {
		uint64_t buf[512];
		struct kdbus_msg *r = build_msg(buf, src, NULL, "after", 5, 0, s->cookie + 1000);
		r->cookie_reply = s->cookie;
		CHECK(send_msg(s->callee->fd, r, 0, NULL) == 0, "the callee replies after the signal");
		wait_unblocked(getpid(), s->tid, KDBUS_CMD_SEND, 5000, "the signalled caller wakes with its reply");
	} else {
		uint64_t now = now_ns();
		int left_ms = s->deadline > now ? (int)((s->deadline - now) / 1000000) : 0;
		wait_unblocked(getpid(), s->tid, KDBUS_CMD_SEND, left_ms + 5000,
			       "the signalled caller wakes at its deadline");
	}
	return NULL;
}

/* EPIPE: once the callee has gone, the caller must wake (not sit out its timeout). */
struct epipe_watch {
	pid_t tid, callee;
};

static void *watch_epipe(void *arg)
{
	struct epipe_watch *w = arg;
	int pidfd = (int)syscall(SYS_pidfd_open, w->callee, 0);
	CHECK(pidfd >= 0, "pidfd_open");
	struct pollfd p = { .fd = pidfd, .events = POLLIN };
	CHECK(poll(&p, 1, 10000) == 1, "EPIPE: the callee exited within 10 s");
	close(pidfd);
	wait_unblocked(getpid(), w->tid, KDBUS_CMD_SEND, 5000, "EPIPE: the caller wakes when its callee has gone");
	return NULL;
}

/* ECONNRESET: another thread says BYEBYE on the caller's connection once the caller is blocked. */
struct byebye {
	pid_t tid;
	struct conn *conn, *callee;
};

static void *byebye_blocked_caller(void *arg)
{
	struct byebye *b = arg;
	uint64_t offset;
	take_call(b->callee, 4, &offset, "BYEBYE");
	CHECK(free_slice(b->callee->fd, offset) == 0, "FREE the call");
	wait_blocked(getpid(), b->tid, KDBUS_CMD_SEND, "S", 5000, "caller blocked before BYEBYE");
	struct kdbus_cmd bye = { .size = sizeof(bye) };
	CHECK(ioctl(b->conn->fd, KDBUS_CMD_BYEBYE, &bye) == 0, "BYEBYE from another thread");
	wait_unblocked(getpid(), b->tid, KDBUS_CMD_SEND, 5000, "BYEBYE: the blocked caller wakes");
	return NULL;
}

/* A child that calls `to` and blocks; with `handler`, SIGUSR1 is caught (and the call goes on). */
static pid_t blocked_caller(uint64_t to, uint64_t cookie, int handler)
{
	pid_t child = fork();
	CHECK(child >= 0, "fork");
	if (child == 0) {
		struct conn c;
		if (handler) {
			struct sigaction usr = { .sa_handler = on_alarm, .sa_flags = SA_RESTART };
			sigaction(SIGUSR1, &usr, NULL);
		}
		hello(&c, root_path, bus, 0);
		/* If the daemon leaves it stuck, it must not hold the test's output open meanwhile. */
		int null = open("/dev/null", O_WRONLY);
		CHECK(null >= 0 && dup2(null, 1) == 1 && dup2(null, 2) == 2, "/dev/null");
		sync_call(&c, to, cookie, 20000);
		_exit(1);
	}
	return child;
}

int main(int argc, char **argv)
{
	char suffix[32];
	struct conn a, b;
	struct kdbus_cmd_recv recv;
	int status;

	root_path = argc > 1 ? argv[1] : "/sys/fs/kdbus";
	snprintf(suffix, sizeof(suffix), "calls%d", getpid());
	int control = make_bus(root_path, suffix, bus, sizeof(bus));
	hello(&a, root_path, bus, 0);

	/* EPIPE: the callee goes away without answering, once the call is queued for it and the caller
	 * is blocked in the daemon. */
	int ready[2];
	CHECK(pipe(ready) == 0, "pipe");
	pid_t parent = getpid();
	pid_t child = fork();
	CHECK(child >= 0, "fork");
	if (child == 0) {
		struct conn c;
		hello(&c, root_path, bus, 0);
		CHECK(write(ready[1], &c.id, sizeof(c.id)) == sizeof(c.id), "tell id");
		struct pollfd p = { .fd = c.fd, .events = POLLIN };
		CHECK(poll(&p, 1, 5000) == 1, "EPIPE: the call reached the callee within 5 s");
		wait_blocked(parent, parent, KDBUS_CMD_SEND, "S", 5000, "EPIPE: caller blocked");
		_exit(0); /* dies with the call queued */
	}
	uint64_t callee;
	CHECK(read(ready[0], &callee, sizeof(callee)) == sizeof(callee), "read id");
	struct epipe_watch watch = { .tid = gettid(), .callee = child };
	pthread_t thread;
	CHECK(pthread_create(&thread, NULL, watch_epipe, &watch) == 0, "pthread_create");
	double t0 = now_ns() / 1e9;
	errno = 0;
	CHECK(sync_call(&a, callee, 1, 10000) < 0 && errno == EPIPE, "sync call to a dying callee -> EPIPE");
	CHECK(now_ns() / 1e9 - t0 < 5, "EPIPE came promptly");
	pthread_join(thread, NULL);
	CHECK(waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0,
	      "the callee saw the call queued and the caller blocked before it went");
	OK("EPIPE when the callee dies");

	hello(&b, root_path, bus, 0);

	/* A handled signal does not end the wait: as kdbus restarts the call, it keeps waiting (and
	 * is not sent again) for its reply or its timeout; the handler runs once the call is over. */
	struct sigaction sa = { .sa_handler = on_alarm, .sa_flags = SA_RESTART };
	sigaction(SIGALRM, &sa, NULL);
	struct signaller sig = { .tid = gettid(), .callee = &b, .cookie = 2, .reply = 1, .thread = pthread_self() };
	alarms = 0;
	CHECK(pthread_create(&thread, NULL, signal_blocked_caller, &sig) == 0, "pthread_create");
	struct kdbus_cmd_send sent_cmd;
	uint64_t callbuf[512];
	struct kdbus_msg *call = build_msg(callbuf, b.id, NULL, NULL, 0, KDBUS_MSG_EXPECT_REPLY, 2);
	call->timeout_ns = now_ns() + 20000000000ULL;
	errno = 0;
	int r = send_msg(a.fd, call, KDBUS_SEND_SYNC_REPLY, &sent_cmd);
	CHECK(r == 0, "signalled sync call still gets its reply (ret %d)", r);
	pthread_join(thread, NULL);
	CHECK(alarms == 1, "the handler ran");
	struct kdbus_msg *answer = (void *)(a.pool + sent_cmd.reply.offset);
	CHECK(answer->cookie_reply == 2 && answer->src_id == b.id, "it is the reply to the signalled call");
	free_slice(a.fd, sent_cmd.reply.offset);
	errno = 0;
	CHECK(recv_msg(&b, &recv, KDBUS_RECV_DROP, 0) < 0 && errno == EAGAIN, "the call was sent only once");
	OK("a handled signal: the call goes on to its reply");

	call = build_msg(callbuf, b.id, NULL, NULL, 0, KDBUS_MSG_EXPECT_REPLY, 6);
	uint64_t deadline = call->timeout_ns = now_ns() + 3000000000ULL;
	sig = (struct signaller){ .tid = gettid(), .callee = &b, .cookie = 6, .reply = 0, .thread = pthread_self(),
				  .deadline = deadline };
	alarms = 0;
	CHECK(pthread_create(&thread, NULL, signal_blocked_caller, &sig) == 0, "pthread_create");
	errno = 0;
	CHECK(send_msg(a.fd, call, KDBUS_SEND_SYNC_REPLY, NULL) < 0 && errno == ETIMEDOUT,
	      "signalled sync call without a reply -> ETIMEDOUT");
	CHECK(now_ns() >= deadline, "it ended at its deadline, not at the signal");
	pthread_join(thread, NULL);
	CHECK(alarms == 1, "the handler ran");
	errno = 0;
	CHECK(recv_msg(&b, &recv, KDBUS_RECV_DROP, 0) < 0 && errno == EAGAIN, "the call was sent only once");
	OK("a handled signal: the call goes on to its timeout");

	/* A caller killed in a sync call exits at once (no D state). */
	uint64_t offset;
	child = blocked_caller(b.id, 3, 0);
	take_call(&b, 3, &offset, "SIGKILL");
	free_slice(b.fd, offset);
	wait_blocked(child, child, KDBUS_CMD_SEND, "S", 5000, "SIGKILL: caller blocked");
	kill(child, SIGKILL);
	status = wait_exit(child, 5000, "a caller killed while blocked exits");
	CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "killed caller reaped (status %#x)", status);
	/* A SIGKILL after a handled signal (which left the call waiting) must not hang either. */
	child = blocked_caller(b.id, 5, 1);
	take_call(&b, 5, &offset, "SIGUSR1 then SIGKILL");
	free_slice(b.fd, offset);
	wait_blocked(child, child, KDBUS_CMD_SEND, "S", 5000, "SIGUSR1: caller blocked");
	kill(child, SIGUSR1);
	wait_blocked(child, child, KDBUS_CMD_SEND, "D", 5000, "caller took SIGUSR1 in the FUSE wait");
	round_trip(&b, "after SIGUSR1");
	wait_blocked(child, child, KDBUS_CMD_SEND, "D", 1000, "the daemon served the INTERRUPT and the caller still waits");
	kill(child, SIGKILL);
	status = wait_exit(child, 5000, "a caller killed after a handled signal exits");
	CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
	      "caller killed after a handled signal reaped (status %#x)", status);
	OK("SIGKILL during a sync call, also after a handled signal");
	while (recv_msg(&b, &recv, KDBUS_RECV_DROP, 0) == 0)
		;

	/* ECONNRESET: another thread says BYEBYE on the caller's connection. */
	struct conn byebye_conn;
	hello(&byebye_conn, root_path, bus, 0);
	free_slice(byebye_conn.fd, byebye_conn.hello.offset);
	struct byebye bye = { .tid = gettid(), .conn = &byebye_conn, .callee = &b };
	CHECK(pthread_create(&thread, NULL, byebye_blocked_caller, &bye) == 0, "pthread_create");
	errno = 0;
	CHECK(sync_call(&byebye_conn, b.id, 4, 10000) < 0 && errno == ECONNRESET, "BYEBYE from another thread -> ECONNRESET");
	pthread_join(thread, NULL);
	OK("ECONNRESET when the own connection goes");
	while (recv_msg(&b, &recv, KDBUS_RECV_DROP, 0) == 0)
		;

	/* Quota: b never reads. 256 messages per sending user, then ENOBUFS. */
	struct kdbus_msg *m = build_msg(msgbuf, b.id, NULL, "q", 1, 0, 10);
	int sent = 0;
	while (send_msg(a.fd, m, 0, NULL) == 0)
		sent++;
	CHECK(errno == ENOBUFS && sent == 256, "ENOBUFS after %d messages (errno %d)", sent, errno);
	struct conn c;
	hello(&c, root_path, bus, 0);
	m = build_msg(msgbuf, c.id, NULL, "q", 1, 0, 11);
	CHECK(send_msg(a.fd, m, 0, NULL) == 0, "another receiver is unaffected");
	CHECK(recv_msg(&b, &recv, 0, 0) == 0, "the full receiver can still read");
	free_slice(b.fd, recv.msg.offset);
	m = build_msg(msgbuf, b.id, NULL, "q", 1, 0, 12);
	CHECK(send_msg(a.fd, m, 0, NULL) == 0, "one read makes room for one more");
	while (recv_msg(&b, &recv, 0, 0) == 0)
		free_slice(b.fd, recv.msg.offset);
	OK("message quota: 256 per sender, others unaffected");

	/* Memory share: a third of the free half of the pool per sending user. */
	static uint8_t big[2 * 1024 * 1024];
	m = build_msg(msgbuf, b.id, NULL, big, sizeof(big), 0, 13);
	CHECK(send_msg(a.fd, m, 0, NULL) == 0, "2 MiB into a 16 MiB pool");
	errno = 0;
	CHECK(send_msg(a.fd, m, 0, NULL) < 0 && errno == ENOBUFS, "second 2 MiB -> ENOBUFS");
	CHECK(recv_msg(&b, &recv, 0, 0) == 0, "RECV the big one");
	free_slice(b.fd, recv.msg.offset);
	OK("memory quota");

	close(control);
	printf("calls: all checks passed\n");
	return 0;
}
