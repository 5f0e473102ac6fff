/* Synchronising on what /proc shows rather than on time, for tests of blocked calls.
 *
 * A thread whose kdbus ioctl is a FUSE request the daemon has not answered sleeps in the kernel's
 * request_wait_answer(): in state 'S' until a signal comes, then (the kernel has queued an INTERRUPT
 * for the daemon) in 'D' until the daemon answers. /proc/PID/task/TID/syscall names the ioctl it is
 * in. Combined with the callee having received the call (so the daemon has served the SEND and not
 * answered it), that proves a caller is blocked in the daemon; a handshake over a pipe would only
 * prove it got near the ioctl. */
#ifndef KDBUSFS_TEST_BLOCKED_H
#define KDBUSFS_TEST_BLOCKED_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <poll.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>

#include "msgutil.h"

/* Fail as CHECK does, naming the test's line rather than this header's. */
#define FAIL_AT(file, line, ...) do {                                           \
	fprintf(stderr, "FAIL %s:%d: ", file, line);                            \
	fprintf(stderr, __VA_ARGS__);                                           \
	fprintf(stderr, "\n");                                                  \
	exit(1);                                                                \
} while (0)

/* A thread as /proc shows it: scheduler state, where it sleeps, the syscall it is in. */
struct task_view {
	char state;        /* 'R', 'S', 'D', ... ('?' if the thread is gone) */
	char wchan[64];    /* "" when the kernel does not say */
	char syscall[128]; /* "NR ARG1 ARG2 ...", "running", or "" when unreadable */
};

static inline void read_line(const char *path, char *buf, size_t len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n = fd >= 0 ? read(fd, buf, len - 1) : -1;
	if (fd >= 0)
		close(fd);
	buf[n > 0 ? n : 0] = '\0';
	buf[strcspn(buf, "\n")] = '\0';
}

static inline void view_task(pid_t pid, pid_t tid, struct task_view *v)
{
	char path[64], stat[512];

	snprintf(path, sizeof(path), "/proc/%d/task/%d/stat", pid, tid);
	read_line(path, stat, sizeof(stat));
	/* "TID (COMM) STATE ...": COMM may hold anything, so look after its last ')'. */
	const char *paren = strrchr(stat, ')');
	v->state = paren && paren[1] == ' ' && paren[2] ? paren[2] : '?';
	snprintf(path, sizeof(path), "/proc/%d/task/%d/wchan", pid, tid);
	read_line(path, v->wchan, sizeof(v->wchan));
	if (strcmp(v->wchan, "0") == 0)
		v->wchan[0] = '\0';
	snprintf(path, sizeof(path), "/proc/%d/task/%d/syscall", pid, tid);
	read_line(path, v->syscall, sizeof(v->syscall));
}

/* Whether the view shows the thread asleep in `states` inside ioctl(_, cmd, _), waiting for the
 * FUSE daemon's answer. Where the kernel hides wchan or syscall, the other must show it. */
static inline int blocked_in_daemon(const struct task_view *v, unsigned long cmd, const char *states)
{
	char want[64];
	int known = 0;

	if (!strchr(states, v->state))
		return 0;
	if (v->wchan[0]) {
		if (!strstr(v->wchan, "request_wait_answer") && !strstr(v->wchan, "fuse"))
			return 0;
		known++;
	}
	if (v->syscall[0] && strcmp(v->syscall, "running") != 0) {
		snprintf(want, sizeof(want), "%d 0x", (int)SYS_ioctl);
		if (strncmp(v->syscall, want, strlen(want)) != 0)
			return 0;
		const char *arg1 = strchr(v->syscall + strlen(want), ' ');
		if (!arg1 || strtoul(arg1 + 1, NULL, 16) != cmd)
			return 0;
		known++;
	} else if (v->syscall[0]) {
		return 0; /* "running" */
	}
	return known > 0;
}

/* Wait until thread `tid` of process `pid` is blocked in the daemon in ioctl(_, cmd, _), asleep in
 * one of `states` ("S": no signal yet; "D": a signal came and the kernel interrupted the request).
 * /proc is polled every millisecond for at most `timeout_ms`; the interval only sets how soon the
 * state is seen, and at the bound the check fails with what the thread last looked like. */
#define wait_blocked(...) wait_blocked_at(__FILE__, __LINE__, __VA_ARGS__)
static inline void wait_blocked_at(const char *file, int line, pid_t pid, pid_t tid, unsigned long cmd,
				   const char *states, int timeout_ms, const char *what)
{
	struct task_view v;
	uint64_t deadline = now_ns() + (uint64_t)timeout_ms * 1000000ULL;

	for (;;) {
		view_task(pid, tid, &v);
		if (blocked_in_daemon(&v, cmd, states))
			return;
		if (now_ns() >= deadline)
			break;
		poll(NULL, 0, 1);
	}
	FAIL_AT(file, line, "%s: thread %d is not blocked in the daemon in state %s within %d ms "
	      "(state '%c', wchan '%s', syscall '%s')", what, tid, states, timeout_ms, v.state, v.wchan,
	      v.syscall);
}

/* The other way round: wait (polling /proc, at most `timeout_ms`) until thread `tid` of `pid` has
 * left the daemon's wait in ioctl(_, cmd, _), so that a daemon that never wakes it fails here with a
 * message instead of hanging the test. The thread must not start another such ioctl meanwhile (join
 * the watching thread first). */
#define wait_unblocked(...) wait_unblocked_at(__FILE__, __LINE__, __VA_ARGS__)
static inline void wait_unblocked_at(const char *file, int line, pid_t pid, pid_t tid, unsigned long cmd,
				     int timeout_ms, const char *what)
{
	struct task_view v;
	uint64_t deadline = now_ns() + (uint64_t)timeout_ms * 1000000ULL;

	for (;;) {
		view_task(pid, tid, &v);
		if (!blocked_in_daemon(&v, cmd, "SD"))
			return;
		if (now_ns() >= deadline)
			break;
		poll(NULL, 0, 1);
	}
	FAIL_AT(file, line, "%s: thread %d is still blocked in the daemon after %d ms (state '%c', wchan '%s', syscall '%s')",
	      what, tid, timeout_ms, v.state, v.wchan, v.syscall);
}

/* Wait at most `timeout_ms` for child `pid` to end (a pidfd becomes readable when it does), then
 * reap it; returns its wait status. Fails the check, naming `what`, if it is still there. */
#define wait_exit(...) wait_exit_at(__FILE__, __LINE__, __VA_ARGS__)
static inline int wait_exit_at(const char *file, int line, pid_t pid, int timeout_ms, const char *what)
{
	int status;
	int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);

	CHECK(pidfd >= 0, "%s: pidfd_open(%d)", what, pid);
	struct pollfd p = { .fd = pidfd, .events = POLLIN };
	if (poll(&p, 1, timeout_ms) != 1) {
		struct task_view v;
		view_task(pid, pid, &v);
		FAIL_AT(file, line, "%s: pid %d still there after %d ms (state '%c', wchan '%s')", what, pid, timeout_ms,
		      v.state, v.wchan);
	}
	close(pidfd);
	CHECK(waitpid(pid, &status, 0) == pid, "%s: waitpid(%d)", what, pid);
	return status;
}

/* Wait (at most 5 s) for the call with `cookie` to reach `callee` and RECV it: from then on the daemon
 * has served the caller's SEND. Returns the message in the callee's pool (FREE its offset). */
#define take_call(...) take_call_at(__FILE__, __LINE__, __VA_ARGS__)
static inline struct kdbus_msg *take_call_at(const char *file, int line, struct conn *callee, uint64_t cookie,
					     uint64_t *offset, const char *what)
{
	struct pollfd p = { .fd = callee->fd, .events = POLLIN };
	struct kdbus_cmd_recv recv;

	if (poll(&p, 1, 5000) != 1 || !(p.revents & POLLIN))
		FAIL_AT(file, line, "%s: the call did not reach the callee within 5 s", what);
	if (recv_msg(callee, &recv, 0, 0) != 0)
		FAIL_AT(file, line, "%s: the callee's RECV failed (errno %d)", what, errno);
	struct kdbus_msg *m = (void *)(callee->pool + recv.msg.offset);
	if (m->cookie != cookie || !(m->flags & KDBUS_MSG_EXPECT_REPLY))
		FAIL_AT(file, line, "%s: the callee got cookie %llu flags %#llx, want the call %llu", what,
	      (unsigned long long)m->cookie, (unsigned long long)m->flags, (unsigned long long)cookie);
	*offset = recv.msg.offset;
	return m;
}

#endif
