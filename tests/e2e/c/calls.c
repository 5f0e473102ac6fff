/* Synchronous calls at their edges: EPIPE, EINTR, a killed caller, ECONNRESET from another thread,
 * and a receiver that never reads until its quota is full.  usage: calls MOUNT_ROOT */
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>

#include "msgutil.h"

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

static struct conn byebye_conn;
static void *byebye_later(void *arg)
{
	(void)arg;
	usleep(200000);
	struct kdbus_cmd bye = { .size = sizeof(bye) };
	ioctl(byebye_conn.fd, KDBUS_CMD_BYEBYE, &bye);
	return NULL;
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

	/* EPIPE: the callee goes away without answering. */
	int ready[2];
	CHECK(pipe(ready) == 0, "pipe");
	pid_t child = fork();
	if (child == 0) {
		struct conn c;
		hello(&c, root_path, bus, 0);
		CHECK(write(ready[1], &c.id, sizeof(c.id)) == sizeof(c.id), "tell id");
		struct pollfd p = { .fd = c.fd, .events = POLLIN };
		poll(&p, 1, 5000);
		_exit(0); /* dies with the call queued */
	}
	uint64_t callee;
	CHECK(read(ready[0], &callee, sizeof(callee)) == sizeof(callee), "read id");
	double t0 = now_ns() / 1e9;
	errno = 0;
	CHECK(sync_call(&a, callee, 1, 10000) < 0 && errno == EPIPE, "sync call to a dying callee -> EPIPE");
	CHECK(now_ns() / 1e9 - t0 < 5, "EPIPE came promptly");
	waitpid(child, &status, 0);
	OK("EPIPE when the callee dies");

	hello(&b, root_path, bus, 0);

	/* A handled signal does not end the wait: as kdbus restarts the call, it keeps waiting (and
	 * is not sent again); the handler runs once the call is over. */
	struct sigaction sa = { .sa_handler = on_alarm, .sa_flags = SA_RESTART };
	sigaction(SIGALRM, &sa, NULL);
	alarms = 0;
	alarm(1);
	t0 = now_ns() / 1e9;
	errno = 0;
	CHECK(sync_call(&a, b.id, 2, 2500) < 0 && errno == ETIMEDOUT, "signalled sync call -> ETIMEDOUT");
	CHECK(now_ns() / 1e9 - t0 > 2, "it kept waiting through the signal");
	CHECK(alarms == 1, "the handler ran");
	CHECK(recv_msg(&b, &recv, KDBUS_RECV_DROP, 0) == 0, "the call was sent once");
	CHECK(recv_msg(&b, &recv, KDBUS_RECV_DROP, 0) < 0 && errno == EAGAIN, "and only once");
	OK("a handled signal: the call goes on");

	/* A caller killed in a sync call exits at once (no D state). */
	child = fork();
	if (child == 0) {
		struct conn c;
		hello(&c, root_path, bus, 0);
		sync_call(&c, b.id, 3, 60000);
		_exit(1);
	}
	usleep(300000);
	kill(child, SIGKILL);
	t0 = now_ns() / 1e9;
	CHECK(waitpid(child, &status, 0) == child && WIFSIGNALED(status), "killed caller reaped");
	CHECK(now_ns() / 1e9 - t0 < 3, "killed caller died promptly");
	/* A SIGKILL after a handled signal (which left the call waiting) must not hang either. */
	child = fork();
	if (child == 0) {
		struct sigaction usr = { .sa_handler = on_alarm, .sa_flags = SA_RESTART };
		struct conn c;
		sigaction(SIGUSR1, &usr, NULL);
		hello(&c, root_path, bus, 0);
		sync_call(&c, b.id, 5, 60000);
		_exit(1);
	}
	usleep(300000);
	kill(child, SIGUSR1);
	usleep(200000);
	kill(child, SIGKILL);
	t0 = now_ns() / 1e9;
	CHECK(waitpid(child, &status, 0) == child && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
	      "caller killed after a handled signal reaped");
	CHECK(now_ns() / 1e9 - t0 < 3, "and died promptly");
	OK("SIGKILL during a sync call, also after a handled signal");
	while (recv_msg(&b, &recv, KDBUS_RECV_DROP, 0) == 0)
		;

	/* ECONNRESET: another thread says BYEBYE on the caller's connection. */
	hello(&byebye_conn, root_path, bus, 0);
	free_slice(byebye_conn.fd, byebye_conn.hello.offset);
	pthread_t thread;
	pthread_create(&thread, NULL, byebye_later, NULL);
	errno = 0;
	CHECK(sync_call(&byebye_conn, b.id, 4, 20000) < 0 && errno == ECONNRESET, "BYEBYE from another thread -> ECONNRESET");
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
