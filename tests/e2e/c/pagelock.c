/* A client that keeps evicting and re-reading its own pool pages (so READs for them are in flight)
 * while another connection keeps sending it messages (so the daemon stores into those pages).
 * On a user mount the daemon pushes pool bytes with FUSE_NOTIFY_STORE; a store into a page whose
 * READ is queued must not stop the daemon from answering that READ.  usage: pagelock MOUNT_ROOT */
#include <poll.h>
#include <pthread.h>

#include "msgutil.h"

static struct conn a;
static volatile int stop;

#define PAGES 16

/* Map the first pages, read them (a READ for each evicted one), unmap, evict, again. Pages mapped
 * somewhere cannot be evicted, so nothing else keeps them mapped. */
static void *churn(void *arg)
{
	(void)arg;
	volatile uint8_t sink = 0;
	while (!stop) {
		uint8_t *view = mmap(NULL, PAGES * 4096, PROT_READ, MAP_SHARED, a.fd, 0);
		if (view == MAP_FAILED)
			abort();
		for (int page = 0; page < PAGES; page++)
			sink += view[page * 4096];
		munmap(view, PAGES * 4096);
		posix_fadvise(a.fd, 0, PAGES * 4096, POSIX_FADV_DONTNEED);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	const char *root = argc > 1 ? argv[1] : "/sys/fs/kdbus";
	char bus[64], suffix[32];
	struct conn b;
	static uint64_t msgbuf[512];
	static char payload[3000];

	snprintf(suffix, sizeof(suffix), "pagelock%d", getpid());
	int control = make_bus(root, suffix, bus, sizeof(bus));
	hello(&a, root, bus, 0);
	hello(&b, root, bus, 0);
	munmap(a.pool, POOL_SIZE);
	pthread_t thread;
	pthread_create(&thread, NULL, churn, NULL);
	uint64_t t0 = now_ns();
	for (int i = 0; i < 3000; i++) {
		struct kdbus_msg *m = build_msg(msgbuf, a.id, NULL, payload, sizeof(payload), 0, i + 1);
		CHECK(send_msg(b.fd, m, 0, NULL) == 0, "SEND %d", i);
		struct kdbus_cmd_recv recv;
		CHECK(recv_msg(&a, &recv, 0, 0) == 0, "RECV %d", i);
		uint64_t page = recv.msg.offset & ~4095ULL;
		uint8_t *view = mmap(NULL, 8192, PROT_READ, MAP_SHARED, a.fd, page);
		CHECK(view != MAP_FAILED, "map the message");
		struct kdbus_msg *got = (void *)(view + (recv.msg.offset - page));
		CHECK(got->cookie == (uint64_t)i + 1, "message %d intact in the pool", i);
		munmap(view, 8192);
		free_slice(a.fd, recv.msg.offset);
	}
	stop = 1;
	pthread_join(thread, NULL);
	OK("3000 messages into pool pages being evicted and re-read (%.1f s)", (now_ns() - t0) / 1e9);
	close(control);
	printf("pagelock: all checks passed\n");
	return 0;
}
