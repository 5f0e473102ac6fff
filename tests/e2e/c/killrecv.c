/* Receivers killed while descriptors are being installed in them: run under `kdbusfs run`, a
 * child receives messages carrying 16 fds each and is SIGKILLed after a varying number of them,
 * mid-stream; every child must be gone at once (no task left waiting on the daemon), and a last
 * receiver still gets its descriptors.
 *
 * usage: killrecv MOUNT_ROOT ROUNDS */
#define _GNU_SOURCE
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "msgutil.h"

#define FDS 16

static uint64_t msgbuf[4096];

static void send_fds(struct conn *from, uint64_t dst, int fd)
{
	struct kdbus_msg *m = build_msg(msgbuf, dst, NULL, NULL, 0, 0, 1);
	struct kdbus_item *it = (void *)((uint8_t *)m + KDBUS_ALIGN8(m->size));
	it->type = KDBUS_ITEM_FDS;
	it->size = KDBUS_ITEM_HEADER_SIZE + FDS * sizeof(int);
	for (int i = 0; i < FDS; i++)
		it->fds[i] = fd;
	m->size = KDBUS_ALIGN8(m->size) + it->size;
	/* Fails once the receiver is gone, or when its queue is full: both are fine here. */
	send_msg(from->fd, m, 0, NULL);
}

/* The child: receive forever, closing what arrives, one progress byte per message. */
static void receive_forever(const char *root, const char *bus, int report)
{
	struct conn c;
	hello(&c, root, bus, KDBUS_HELLO_ACCEPT_FD);
	CHECK(write(report, &c.id, sizeof(c.id)) == sizeof(c.id), "report id");
	struct pollfd p = { .fd = c.fd, .events = POLLIN };
	for (;;) {
		struct kdbus_cmd_recv recv;
		if (recv_msg(&c, &recv, 0, 0) < 0) {
			CHECK(errno == EAGAIN, "RECV");
			poll(&p, 1, -1);
			continue;
		}
		const struct kdbus_msg *m = (const void *)(c.pool + recv.msg.offset);
		const struct kdbus_item *it = find_item(m, KDBUS_ITEM_FDS);
		for (int i = 0; it && i < FDS; i++)
			if (it->fds[i] >= 0)
				close(it->fds[i]);
		free_slice(c.fd, recv.msg.offset);
		CHECK(write(report, "x", 1) == 1, "progress");
	}
}

int main(int argc, char **argv)
{
	CHECK(argc == 3, "usage: killrecv MOUNT_ROOT ROUNDS");
	const char *root = argv[1];
	int rounds = atoi(argv[2]);
	char bus[64], suffix[32];
	struct conn s;
	int p[2];

	snprintf(suffix, sizeof(suffix), "killrecv%d", getpid());
	int owner = make_bus(root, suffix, bus, sizeof(bus));
	hello(&s, root, bus, 0);
	CHECK(pipe2(p, O_CLOEXEC) == 0, "pipe2");
	for (int round = 0; round < rounds; round++) {
		int report[2];
		CHECK(pipe2(report, O_CLOEXEC) == 0, "pipe2");
		pid_t child = fork();
		CHECK(child >= 0, "fork");
		if (child == 0) {
			close(report[0]);
			receive_forever(root, bus, report[1]);
		}
		close(report[1]);
		uint64_t id;
		CHECK(read(report[0], &id, sizeof(id)) == sizeof(id), "child id");
		int wanted = 1 + round % 7, seen = 0;
		char byte;
		/* Keep its queue supplied until it has taken `wanted` messages, then kill it mid-stream. */
		while (seen < wanted) {
			send_fds(&s, id, p[0]);
			struct pollfd pr = { .fd = report[0], .events = POLLIN };
			if (poll(&pr, 1, 0) == 1 && read(report[0], &byte, 1) == 1)
				seen++;
		}
		send_fds(&s, id, p[0]);
		kill(child, SIGKILL);
		int pidfd = syscall(SYS_pidfd_open, child, 0);
		struct pollfd pd = { .fd = pidfd, .events = POLLIN };
		CHECK(pidfd >= 0 && poll(&pd, 1, 5000) == 1, "round %d: the killed receiver exits within 5 s",
		      round);
		CHECK(waitpid(child, NULL, 0) == child, "reap");
		close(pidfd);
		close(report[0]);
	}
	OK("%d receivers killed while taking descriptors all exited at once", rounds);

	struct conn last;
	hello(&last, root, bus, KDBUS_HELLO_ACCEPT_FD);
	send_fds(&s, last.id, p[0]);
	struct kdbus_cmd_recv recv;
	CHECK(recv_msg(&last, &recv, 0, 0) == 0, "the last receiver's RECV");
	const struct kdbus_msg *m = (const void *)(last.pool + recv.msg.offset);
	const struct kdbus_item *it = find_item(m, KDBUS_ITEM_FDS);
	CHECK(it && it->fds[0] >= 0 && !(recv.msg.return_flags & KDBUS_RECV_RETURN_INCOMPLETE_FDS),
	      "the daemon still installs descriptors afterwards");
	for (int i = 0; i < FDS; i++)
		close(it->fds[i]);
	OK("a receiver after them gets its %d descriptors", FDS);
	close(owner);
	printf("killrecv: all checks passed\n");
	return 0;
}
