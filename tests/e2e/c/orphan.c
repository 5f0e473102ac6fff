/* A thread whose thread-group leader has exited (pthread_exit from main) passes descriptors: kdbus
 * takes them from the calling thread's file table, so the SEND succeeds and the message arrives.
 *
 * usage: orphan MOUNT_ROOT */
#define _GNU_SOURCE
#include <pthread.h>
#include <sys/syscall.h>

#include "msgutil.h"

static const char *root;
static char bus[64];
static struct conn sender, receiver;
static pid_t leader;

/* The leader's state letter from /proc/PID/stat ('Z' once it has exited while threads remain). */
static char state_of(pid_t pid)
{
	char path[64], buf[512];
	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return '?';
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return '?';
	buf[n] = 0;
	char *end = strrchr(buf, ')');
	return end && end[1] == ' ' ? end[2] : '?';
}

static void *orphan(void *arg)
{
	(void)arg;
	uint64_t deadline = now_ns() + 30ULL * 1000000000ULL;
	while (state_of(leader) != 'Z') {
		CHECK(now_ns() < deadline, "the leader did not exit within 30 s (state %c)", state_of(leader));
		sched_yield();
	}
	CHECK(syscall(SYS_gettid) != leader, "running on a thread other than the leader");
	OK("the thread-group leader has exited; this thread is alone");

	int pipefd[2];
	CHECK(pipe2(pipefd, O_CLOEXEC) == 0, "pipe2");
	static uint64_t buf[512];
	static const char data[] = "from an orphaned thread";
	struct kdbus_msg *m = build_msg(buf, receiver.id, NULL, data, sizeof(data), 0, 42);
	struct kdbus_item *it = (void *)((uint8_t *)m + KDBUS_ALIGN8(m->size));
	it->type = KDBUS_ITEM_FDS;
	it->size = KDBUS_ITEM_HEADER_SIZE + sizeof(int);
	it->fds[0] = pipefd[0];
	m->size = KDBUS_ALIGN8(m->size) + it->size;
	CHECK(send_msg(sender.fd, m, 0, NULL) == 0, "SEND with an FDS item from the orphaned thread");
	OK("SEND with a pipe fd from a thread whose leader exited");

	struct kdbus_cmd_recv recv;
	CHECK(recv_msg(&receiver, &recv, 0, 0) == 0, "RECV");
	const struct kdbus_msg *got = (const void *)(receiver.pool + recv.msg.offset);
	uint64_t len = 0;
	const uint8_t *payload = payload_of(got, &len);
	const struct kdbus_item *fds = find_item(got, KDBUS_ITEM_FDS);
	CHECK(got->cookie == 42 && payload && len == sizeof(data) && memcmp(payload, data, len) == 0,
	      "the message arrives with its payload");
	CHECK(fds && fds->size == KDBUS_ITEM_HEADER_SIZE + sizeof(int), "the message carries its FDS item");
	CHECK(free_slice(receiver.fd, recv.msg.offset) == 0, "FREE");
	OK("the receiver gets the message and its FDS item");
	printf("orphan: all checks passed\n");
	fflush(stdout);
	exit(0);
}

int main(int argc, char **argv)
{
	CHECK(argc == 2, "usage: orphan MOUNT_ROOT");
	root = argv[1];
	char suffix[32];
	snprintf(suffix, sizeof(suffix), "orphan%d", getpid());
	make_bus(root, suffix, bus, sizeof(bus));
	hello(&sender, root, bus, KDBUS_HELLO_ACCEPT_FD);
	hello(&receiver, root, bus, KDBUS_HELLO_ACCEPT_FD);
	leader = getpid();
	pthread_t thread;
	CHECK(pthread_create(&thread, NULL, orphan, NULL) == 0, "pthread_create");
	pthread_exit(NULL);
}
