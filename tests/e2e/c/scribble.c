/* Pool integrity: a connection that maps its own pool writable and overwrites it without pause
 * must not change what any other connection receives.  kdbus copies every receiver's message from
 * the sender; a pool is output only.
 *
 * Phase 1: A (scribbling) and B receive the same broadcasts; every one B gets must carry exactly
 *          the sender's payload.
 * Phase 2: the same with two monitors, the first one scribbling: the second monitor, A's and B's
 *          copies stay intact.
 * Phase 3: an activator scribbles over the calls queued for its name before the service takes the
 *          name over; the service gets exactly what was sent.
 * Phase 4: an owner scribbles over the calls queued for its name, an activator for the name comes
 *          only then, and the owner gives the name back: the calls move to the activator and on to
 *          the service exactly as they were sent.
 *
 * usage: scribble MOUNT_ROOT [BROADCASTS] */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>

#include "msgutil.h"

#define BLOOM 64
#define PAYLOAD 4096
#define SERVICE "org.kdbusfs.Scribbled"
#define SERVICE2 "org.kdbusfs.Forged"

static uint64_t msgbuf[4096];
static uint8_t payload[PAYLOAD];

struct scribbler {
	pthread_t thread;
	uint8_t *pool;
	atomic_int stop;
	atomic_ulong rounds;
};

static void *scribble(void *arg)
{
	struct scribbler *s = arg;
	while (!atomic_load(&s->stop)) {
		memset(s->pool, 0xee, POOL_SIZE);
		atomic_fetch_add(&s->rounds, 1);
	}
	return NULL;
}

/* Map the connection's pool a second time, writable and shared, and overwrite it without pause. */
static void start_scribbling(struct scribbler *s, struct conn *c)
{
	s->pool = mmap(NULL, POOL_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, c->fd, 0);
	CHECK(s->pool != MAP_FAILED, "mmap the pool writable");
	atomic_store(&s->stop, 0);
	atomic_store(&s->rounds, 0);
	CHECK(pthread_create(&s->thread, NULL, scribble, s) == 0, "pthread_create");
	/* Scribbling has begun before the first message goes out. */
	while (atomic_load(&s->rounds) == 0)
		sched_yield();
}

static unsigned long stop_scribbling(struct scribbler *s)
{
	atomic_store(&s->stop, 1);
	pthread_join(s->thread, NULL);
	munmap(s->pool, POOL_SIZE);
	return atomic_load(&s->rounds);
}

static void fill_payload(unsigned i)
{
	for (size_t k = 0; k < PAYLOAD; k++)
		payload[k] = (uint8_t)(k * 7 + i * 13 + 1);
}

static int match_all(struct conn *c)
{
	struct kdbus_cmd_match cmd = { .size = sizeof(cmd), .cookie = 1 };
	return ioctl(c->fd, KDBUS_CMD_MATCH_ADD, &cmd);
}

static void broadcast(struct conn *from, unsigned i)
{
	fill_payload(i);
	struct kdbus_msg *m = build_msg(msgbuf, KDBUS_DST_ID_BROADCAST, NULL, payload, PAYLOAD,
					KDBUS_MSG_SIGNAL, 1000 + i);
	struct kdbus_item *it = (void *)((uint8_t *)m + KDBUS_ALIGN8(m->size));
	it->type = KDBUS_ITEM_BLOOM_FILTER;
	it->size = KDBUS_ITEM_HEADER_SIZE + 8 + BLOOM;
	memset(it->bloom_filter.data, 0xff, BLOOM);
	it->bloom_filter.generation = 0;
	m->size = KDBUS_ALIGN8(m->size) + it->size;
	CHECK(send_msg(from->fd, m, 0, NULL) == 0, "broadcast %u", i);
}

/* Receive the next message: 1 if its payload is message `i`'s exactly, 0 if it differs.  Checking
 * is skipped (returns 1) for a receiver that scribbles on its own pool. */
static int take(struct conn *c, unsigned i, uint64_t cookie, int check)
{
	struct kdbus_cmd_recv recv;
	CHECK(recv_msg(c, &recv, 0, 0) == 0, "RECV message %u on %llu", i, (unsigned long long)c->id);
	const struct kdbus_msg *m = (const void *)(c->pool + recv.msg.offset);
	int intact = 1;
	if (check) {
		uint64_t len = 0;
		const uint8_t *data = payload_of(m, &len);
		CHECK(m->cookie == cookie, "message %u: cookie %llu, want %llu", i,
		      (unsigned long long)m->cookie, (unsigned long long)cookie);
		fill_payload(i);
		intact = data != NULL && len == PAYLOAD && memcmp(data, payload, PAYLOAD) == 0;
	}
	CHECK(free_slice(c->fd, recv.msg.offset) == 0, "FREE");
	return intact;
}

static void hello_monitor(struct conn *c, const char *root, const char *bus)
{
	hello(c, root, bus, KDBUS_HELLO_MONITOR);
}

static void hello_activator(struct conn *c, const char *root, const char *bus, const char *name)
{
	uint64_t buf[64] = {0};
	struct kdbus_cmd_hello *h = (void *)buf;
	struct kdbus_item *it = h->items;
	c->fd = open_bus(root, bus);
	CHECK(c->fd >= 0, "open bus for the activator");
	it->type = KDBUS_ITEM_NAME;
	it->size = KDBUS_ITEM_HEADER_SIZE + strlen(name) + 1;
	strcpy(it->str, name);
	h->size = sizeof(*h) + KDBUS_ALIGN8(it->size);
	h->flags = KDBUS_HELLO_ACTIVATOR;
	h->pool_size = POOL_SIZE;
	CHECK(ioctl(c->fd, KDBUS_CMD_HELLO, h) == 0, "HELLO activator");
	c->id = h->id;
	c->pool = mmap(NULL, POOL_SIZE, PROT_READ, MAP_SHARED, c->fd, 0);
	CHECK(c->pool != MAP_FAILED, "mmap activator pool");
}

int main(int argc, char **argv)
{
	CHECK(argc == 2 || argc == 3, "usage: scribble MOUNT_ROOT [BROADCASTS]");
	const char *root = argv[1];
	unsigned n = argc == 3 ? (unsigned)atoi(argv[2]) : 1000;
	char bus[64], suffix[32];
	struct conn s, a, b, m1, m2, act, svc;
	struct scribbler scribbler;
	unsigned bad;

	snprintf(suffix, sizeof(suffix), "scribble%d", getpid());
	int owner = make_bus(root, suffix, bus, sizeof(bus));
	hello(&s, root, bus, 0);
	hello(&a, root, bus, 0);
	hello(&b, root, bus, 0);
	CHECK(match_all(&a) == 0 && match_all(&b) == 0, "MATCH_ADD");

	/* Phase 1: A is the first receiver of every broadcast (connections are visited in id order). */
	start_scribbling(&scribbler, &a);
	bad = 0;
	for (unsigned i = 0; i < n; i++) {
		broadcast(&s, i);
		take(&a, i, 0, 0);
		bad += !take(&b, i, 1000 + i, 1);
	}
	unsigned long rounds = stop_scribbling(&scribbler);
	CHECK(bad == 0, "%u of %u broadcasts reached B changed while A scribbled on its pool", bad, n);
	OK("%u broadcasts reach B intact while A overwrites its own pool (%lu passes over it)", n, rounds);

	/* Phase 2: monitors see every message before its recipients; the first one scribbles. */
	hello_monitor(&m1, root, bus);
	hello_monitor(&m2, root, bus);
	start_scribbling(&scribbler, &m1);
	unsigned bad_m2 = 0, bad_a = 0, bad_b = 0;
	for (unsigned i = 0; i < n; i++) {
		broadcast(&s, i);
		take(&m1, i, 0, 0);
		bad_m2 += !take(&m2, i, 1000 + i, 1);
		bad_a += !take(&a, i, 1000 + i, 1);
		bad_b += !take(&b, i, 1000 + i, 1);
	}
	rounds = stop_scribbling(&scribbler);
	CHECK(bad_m2 + bad_a + bad_b == 0, "while monitor 1 scribbled, %u/%u/%u of %u changed for monitor 2/A/B",
	      bad_m2, bad_a, bad_b, n);
	OK("%u broadcasts reach monitor 2, A and B intact while monitor 1 overwrites its pool (%lu passes)",
	   n, rounds);
	close(m1.fd);
	close(m2.fd);
	munmap(m1.pool, POOL_SIZE);
	munmap(m2.pool, POOL_SIZE);

	/* Phase 3: calls queued for an activator move to the service that takes the name. */
	hello_activator(&act, root, bus, SERVICE);
	unsigned queued = n < 200 ? n : 200;  /* under the per-sender queue limit of 256 */
	for (unsigned i = 0; i < queued; i++) {
		fill_payload(i);
		struct kdbus_msg *m = build_msg(msgbuf, 0, SERVICE, payload, PAYLOAD, 0, 5000 + i);
		CHECK(send_msg(s.fd, m, 0, NULL) == 0, "send %u to the activated name", i);
	}
	start_scribbling(&scribbler, &act);
	/* The scribbler has overwritten the whole pool at least twice: every queued message is hit. */
	unsigned long seen = atomic_load(&scribbler.rounds);
	while (atomic_load(&scribbler.rounds) < seen + 2)
		sched_yield();
	hello(&svc, root, bus, 0);
	CHECK(name_cmd(svc.fd, KDBUS_CMD_NAME_ACQUIRE, SERVICE, 0, NULL) == 0, "the service takes the name");
	stop_scribbling(&scribbler);
	bad = 0;
	for (unsigned i = 0; i < queued; i++)
		bad += !take(&svc, i, 5000 + i, 1);
	CHECK(bad == 0, "%u of %u messages handed over from the activator were changed", bad, queued);
	OK("%u messages handed over from a scribbling activator arrive intact", queued);

	/* Phase 4. */
	struct conn own, act2, svc2;
	hello(&own, root, bus, 0);
	CHECK(name_cmd(own.fd, KDBUS_CMD_NAME_ACQUIRE, SERVICE2, 0, NULL) == 0, "the owner takes the name");
	for (unsigned i = 0; i < queued; i++) {
		fill_payload(i);
		struct kdbus_msg *m = build_msg(msgbuf, 0, SERVICE2, payload, PAYLOAD, 0, 7000 + i);
		CHECK(send_msg(s.fd, m, 0, NULL) == 0, "send %u to the owned name", i);
	}
	start_scribbling(&scribbler, &own);
	seen = atomic_load(&scribbler.rounds);
	while (atomic_load(&scribbler.rounds) < seen + 2)
		sched_yield();
	hello_activator(&act2, root, bus, SERVICE2);
	CHECK(name_cmd(own.fd, KDBUS_CMD_NAME_RELEASE, SERVICE2, 0, NULL) == 0, "the owner gives the name back");
	stop_scribbling(&scribbler);
	hello(&svc2, root, bus, 0);
	CHECK(name_cmd(svc2.fd, KDBUS_CMD_NAME_ACQUIRE, SERVICE2, 0, NULL) == 0, "the service takes the name");
	bad = 0;
	for (unsigned i = 0; i < queued; i++)
		bad += !take(&svc2, i, 7000 + i, 1);
	CHECK(bad == 0, "%u of %u messages an owner handed back were changed", bad, queued);
	OK("%u messages queued on a scribbling owner move intact to a later activator and its service", queued);

	close(owner);
	printf("scribble: all checks passed\n");
	return 0;
}
