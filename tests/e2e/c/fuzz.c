/* A structured ioctl fuzzer: several threads, each with its own control, endpoint and connection fds,
 * issue random but plausible kdbus commands (real structs, mutated: random items, sizes, flags,
 * offsets, bad pointers), while a bystander pair of connections keeps making synchronous calls and
 * checks every answer. Fails if the bystander ever fails or an ioctl returns an errno kdbus never
 * returns (EIO is how the daemon answers a request it crashed on).
 * usage: fuzz MOUNT_ROOT IOCTLS SEED [THREADS] */
#include "msgutil.h"

#include <poll.h>
#include <pthread.h>
#include <sys/syscall.h>

#define SLOTS 8
#define MAX_THREADS 16
#define NAMES 4
#define MAX_IDS 256

static const char *root;
static char main_bus[64];
static uint64_t iterations_per_thread;
/* The caller stops first; the callee only once the caller's last call is answered. */
static volatile int stop_bystander, stop_callee;

/* Every errno a kdbus command can answer with (KDBUS-SPEC.md) and the edge's own (EFAULT, ENOTTY,
 * EINTR). Not EIO: the daemon answers EIO only when a request raised something unexpected. */
static const int KDBUS_ERRNOS[] = {
	EPERM, ENOENT, ESRCH, EINTR, EBADF, EAGAIN, EFAULT, EBUSY, EEXIST, ENXIO, E2BIG, EINVAL, EMFILE,
	ENOTTY, ETXTBSY, EMLINK, EPIPE, EDOM, ENAMETOOLONG, ENOBUFS, EMSGSIZE, EOPNOTSUPP, ECONNRESET,
	ESHUTDOWN, ETIMEDOUT, EADDRINUSE, EADDRNOTAVAIL, EDESTADDRREQ, ENOTUNIQ, EBADFD, EBADMSG, EBADSLT,
	ECANCELED, ECOMM, EPROTO, EREMCHG, EUCLEAN, EXFULL, EMEDIUMTYPE, EISDIR, ENOTCONN, ENODEV,
};

/* Connection ids any thread may aim at (its own, other threads', the bystanders'). */
static uint64_t known_ids[MAX_IDS];

static void remember_id(uint64_t id)
{
	static unsigned next;
	__atomic_store_n(&known_ids[__atomic_fetch_add(&next, 1, __ATOMIC_RELAXED) % MAX_IDS], id,
			 __ATOMIC_RELAXED);
}

struct rng { uint64_t s; };

static uint64_t next_rand(struct rng *r)
{
	/* xorshift64*: fast and reproducible from the seed. */
	r->s ^= r->s >> 12;
	r->s ^= r->s << 25;
	r->s ^= r->s >> 27;
	return r->s * 0x2545F4914F6CDD1DULL;
}

static uint64_t below(struct rng *r, uint64_t n) { return n ? next_rand(r) % n : 0; }
static int chance(struct rng *r, unsigned one_in) { return below(r, one_in) == 0; }

enum kind { EMPTY, CONTROL, ENDPOINT };

struct slot {
	int fd;
	enum kind kind;
	int connected;
	int owns_endpoint;  /* an ENDPOINT_MAKE on it succeeded */
	int dead;           /* disconnected or its bus gone: worth replacing */
	uint64_t recent_offset;  /* of the last slice RECV or a query handed out */
};

struct worker {
	int index;
	struct rng rng;
	struct slot slots[SLOTS];
	uint64_t buf[4096];
	uint64_t msg[1024];
	uint8_t payload[4096];
	uint8_t *edge;            /* 8 bytes before an inaccessible page */
	int pipe_fds[2];
	int sealed_memfd, plain_memfd;
	unsigned buses_made;
	uint64_t ioctls;
	uint64_t errnos[4096];
	int bad_errno;
	unsigned long bad_cmd;
};

static const char *const NAME_POOL[NAMES] = { "org.fuzz.a", "org.fuzz.b", "org.fuzz.b.c", "org.fuzz.*" };

static const uint64_t ITEM_TYPES[] = {
	KDBUS_ITEM_NEGOTIATE, KDBUS_ITEM_PAYLOAD_VEC, KDBUS_ITEM_PAYLOAD_OFF, KDBUS_ITEM_PAYLOAD_MEMFD,
	KDBUS_ITEM_FDS, KDBUS_ITEM_CANCEL_FD, KDBUS_ITEM_BLOOM_PARAMETER, KDBUS_ITEM_BLOOM_FILTER,
	KDBUS_ITEM_BLOOM_MASK, KDBUS_ITEM_DST_NAME, KDBUS_ITEM_MAKE_NAME, KDBUS_ITEM_ATTACH_FLAGS_SEND,
	KDBUS_ITEM_ATTACH_FLAGS_RECV, KDBUS_ITEM_ID, KDBUS_ITEM_NAME, KDBUS_ITEM_DST_ID, KDBUS_ITEM_TIMESTAMP,
	KDBUS_ITEM_CREDS, KDBUS_ITEM_PIDS, KDBUS_ITEM_AUXGROUPS, KDBUS_ITEM_OWNED_NAME, KDBUS_ITEM_TID_COMM,
	KDBUS_ITEM_PID_COMM, KDBUS_ITEM_EXE, KDBUS_ITEM_CMDLINE, KDBUS_ITEM_CGROUP, KDBUS_ITEM_CAPS,
	KDBUS_ITEM_SECLABEL, KDBUS_ITEM_AUDIT, KDBUS_ITEM_CONN_DESCRIPTION, KDBUS_ITEM_POLICY_ACCESS,
	KDBUS_ITEM_NAME_ADD, KDBUS_ITEM_NAME_REMOVE, KDBUS_ITEM_NAME_CHANGE, KDBUS_ITEM_ID_ADD,
	KDBUS_ITEM_ID_REMOVE, KDBUS_ITEM_REPLY_TIMEOUT, KDBUS_ITEM_REPLY_DEAD, 0, 17, 0x100e, 0x2001, 0x8007,
};
#define N_ITEM_TYPES (sizeof(ITEM_TYPES) / sizeof(ITEM_TYPES[0]))

/* Payload sizes near every struct's real one, where parsers that trust a size break. */
static const int PAYLOAD_SIZES[] = { 0, 1, 4, 7, 8, 9, 12, 15, 16, 17, 22, 23, 24, 25, 31, 32, 33, 40, 63, 64,
				     65, 72 };

static uint64_t random_id(struct worker *w)
{
	switch (below(&w->rng, 6)) {
	case 0: return KDBUS_DST_ID_BROADCAST;
	case 1: return 0;
	case 2: return next_rand(&w->rng);
	default: return __atomic_load_n(&known_ids[below(&w->rng, MAX_IDS)], __ATOMIC_RELAXED);
	}
}

static int random_fd(struct worker *w)
{
	switch (below(&w->rng, 7)) {
	case 0: return w->pipe_fds[below(&w->rng, 2)];
	case 1: return w->sealed_memfd;
	case 2: return w->plain_memfd;
	case 3: return w->slots[below(&w->rng, SLOTS)].fd;  /* a kdbus fd, or -1 */
	case 4: return -1;
	case 5: return 9999;
	default: return (int)next_rand(&w->rng);
	}
}

/* A payload vec address: our buffer mostly, sometimes something that cannot be read. */
static uint64_t random_address(struct worker *w)
{
	switch (below(&w->rng, 8)) {
	case 0: return 0;
	case 1: return (uintptr_t)w->edge;
	case 2: return 0xffffffff81000000ULL;
	case 3: return next_rand(&w->rng);
	default: return (uintptr_t)w->payload;
	}
}

static struct kdbus_item *put_string(struct kdbus_item *it, uint64_t type, const char *text)
{
	it->type = type;
	it->size = KDBUS_ITEM_HEADER_SIZE + strlen(text) + 1;
	strcpy(it->str, text);
	return KDBUS_ITEM_NEXT(it);
}

static struct kdbus_item *put_u64(struct kdbus_item *it, uint64_t type, uint64_t value)
{
	it->type = type;
	it->size = KDBUS_ITEM_HEADER_SIZE + 8;
	it->data64[0] = value;
	return KDBUS_ITEM_NEXT(it);
}

/* One item of a random type and size, plausible or not, its size field sometimes lying. */
static struct kdbus_item *put_random_item(struct worker *w, struct kdbus_item *it)
{
	struct rng *r = &w->rng;
	uint64_t type = chance(r, 20) ? next_rand(r) : ITEM_TYPES[below(r, N_ITEM_TYPES)];
	int size = chance(r, 2) ? PAYLOAD_SIZES[below(r, sizeof(PAYLOAD_SIZES) / sizeof(int))] : (int)below(r, 81);
	it->type = type;
	switch (below(r, 4)) {
	case 0: memset(it->data, 0, size); break;
	case 1: for (int i = 0; i < size; i++) it->data[i] = (uint8_t)next_rand(r); break;
	case 2:  /* a name, NUL-terminated at the end */
		for (int i = 0; i < size; i++) it->data[i] = "org.fuzz.x"[i % 10];
		if (size) it->data[size - 1] = 0;
		break;
	default:  /* small numbers: sizes, ids, fds that parse and must then be acted on */
		for (int i = 0; i + 8 <= size; i += 8) *(uint64_t *)(it->data + i) = below(r, 4) ? below(r, 70) : random_id(w);
		for (int i = size & ~7; i < size; i++) it->data[i] = (uint8_t)below(r, 3);
		break;
	}
	it->size = KDBUS_ITEM_HEADER_SIZE + size;
	struct kdbus_item *next = KDBUS_ITEM_NEXT(it);
	if (chance(r, 16)) {
		static const uint64_t lies[] = { 0, 8, 15, 17, 1ULL << 63, ~0ULL, 4096 };
		it->size = chance(r, 2) ? lies[below(r, 7)] : it->size + below(r, 40) - 20;
	}
	return next;
}

static struct kdbus_item *put_random_items(struct worker *w, struct kdbus_item *it, unsigned max)
{
	unsigned n = below(&w->rng, max + 1);
	for (unsigned i = 0; i < n; i++)
		it = put_random_item(w, it);
	return it;
}

static const char *random_name(struct worker *w)
{
	return NAME_POOL[below(&w->rng, NAMES)];
}

static uint64_t random_flags(struct worker *w, uint64_t valid)
{
	switch (below(&w->rng, 8)) {
	case 0: return next_rand(&w->rng);
	case 1: return KDBUS_FLAG_NEGOTIATE;
	case 2: return 0;
	default: return next_rand(&w->rng) & valid;
	}
}

static uint64_t finish(void *cmd, struct kdbus_item *end)
{
	uint64_t size = (uint8_t *)end - (uint8_t *)cmd;
	*(uint64_t *)cmd = size;
	return size;
}

/* A kdbus_msg in w->msg: real items mostly, random ones sometimes. */
static void build_message(struct worker *w, int sync)
{
	struct rng *r = &w->rng;
	struct kdbus_msg *m = (void *)w->msg;
	memset(m, 0, sizeof(*m));
	m->flags = random_flags(w, KDBUS_MSG_EXPECT_REPLY | KDBUS_MSG_NO_AUTO_START | KDBUS_MSG_SIGNAL);
	m->priority = chance(r, 4) ? (int64_t)next_rand(r) : (int64_t)below(r, 5) - 2;
	m->dst_id = random_id(w);
	m->src_id = chance(r, 8) ? next_rand(r) : 0;
	m->payload_type = chance(r, 8) ? below(r, 3) : KDBUS_PAYLOAD_DBUS;
	m->cookie = next_rand(r);
	m->timeout_ns = chance(r, 3) ? now_ns() + below(r, 2000000) : (chance(r, 2) ? 0 : next_rand(r));
	struct kdbus_item *it = m->items;
	if (m->dst_id == 0 || chance(r, 8))
		it = put_string(it, KDBUS_ITEM_DST_NAME, chance(r, 3) ? "org.fuzz.none" : random_name(w));
	for (unsigned n = below(r, 3); n > 0; n--) {
		it->type = KDBUS_ITEM_PAYLOAD_VEC;
		it->size = KDBUS_ITEM_HEADER_SIZE + sizeof(struct kdbus_vec);
		it->vec.address = random_address(w);
		it->vec.size = chance(r, 8) ? next_rand(r) : 1 + below(r, sizeof(w->payload));
		it = KDBUS_ITEM_NEXT(it);
	}
	if (chance(r, 6)) {
		it->type = KDBUS_ITEM_PAYLOAD_MEMFD;
		it->size = KDBUS_ITEM_HEADER_SIZE + sizeof(struct kdbus_memfd);
		it->memfd.start = below(r, 8);
		it->memfd.size = 1 + below(r, 16);
		it->memfd.fd = random_fd(w);
		it->memfd.__pad = 0;
		it = KDBUS_ITEM_NEXT(it);
	}
	if (chance(r, 6)) {
		unsigned n = below(r, 4);
		it->type = KDBUS_ITEM_FDS;
		it->size = KDBUS_ITEM_HEADER_SIZE + 4 * n;
		for (unsigned i = 0; i < n; i++)
			it->fds[i] = random_fd(w);
		it = KDBUS_ITEM_NEXT(it);
	}
	if ((m->flags & KDBUS_MSG_SIGNAL) || chance(r, 10)) {
		int words = chance(r, 6) ? (int)below(r, 10) : 8;  /* the main bus's bloom is 64 bytes */
		it->type = KDBUS_ITEM_BLOOM_FILTER;
		it->size = KDBUS_ITEM_HEADER_SIZE + 8 + 8 * words;
		it->bloom_filter.generation = below(r, 2);
		for (int i = 0; i < words; i++)
			it->bloom_filter.data[i] = chance(r, 2) ? next_rand(r) : 0;
		it = KDBUS_ITEM_NEXT(it);
	}
	if (chance(r, 10))
		it = put_random_items(w, it, 2);
	finish(m, it);
	if (chance(r, 10))
		((uint8_t *)m)[below(r, m->size)] ^= 1 << below(r, 8);
	if (sync) {
		/* A synchronous call must end by its deadline: no peer here answers it. */
		m->flags |= KDBUS_MSG_EXPECT_REPLY;
		m->flags &= ~KDBUS_MSG_SIGNAL;
		m->timeout_ns = now_ns() + below(r, 3000000);
	}
}

/* The struct of one command in w->buf, mutated; returns the ioctl argument. */
static void *build_command(struct worker *w, struct slot *s, unsigned long cmd, int *may_block)
{
	struct rng *r = &w->rng;
	uint64_t *b = w->buf;
	struct kdbus_item *it;
	char name[64];
	memset(b, 0, 1024);
	*may_block = 0;
	switch (cmd) {
	case KDBUS_CMD_BUS_MAKE: {
		struct kdbus_cmd *c = (void *)b;
		c->flags = random_flags(w, KDBUS_MAKE_ACCESS_GROUP | KDBUS_MAKE_ACCESS_WORLD);
		it = c->items;
		it->type = KDBUS_ITEM_BLOOM_PARAMETER;
		it->size = KDBUS_ITEM_HEADER_SIZE + sizeof(struct kdbus_bloom_parameter);
		it->bloom_parameter.size = chance(r, 4) ? below(r, 5000) : 64;
		it->bloom_parameter.n_hash = chance(r, 4) ? below(r, 3) : 1;
		it = KDBUS_ITEM_NEXT(it);
		snprintf(name, sizeof(name), "%u-fz%d-%u", geteuid(), w->index, w->buses_made++ % 4);
		it = put_string(it, KDBUS_ITEM_MAKE_NAME, chance(r, 10) ? "bad/name" : name);
		if (chance(r, 3))
			it = put_u64(it, KDBUS_ITEM_ATTACH_FLAGS_SEND, chance(r, 2) ? _KDBUS_ATTACH_ALL : next_rand(r));
		it = put_random_items(w, it, chance(r, 4));
		finish(c, it);
		break;
	}
	case KDBUS_CMD_ENDPOINT_MAKE: {
		struct kdbus_cmd *c = (void *)b;
		c->flags = random_flags(w, KDBUS_MAKE_ACCESS_GROUP | KDBUS_MAKE_ACCESS_WORLD);
		snprintf(name, sizeof(name), "%u-ep%d-%u", geteuid(), w->index, (unsigned)below(r, 3));
		it = put_string(c->items, KDBUS_ITEM_MAKE_NAME, name);
		it = put_random_items(w, it, chance(r, 4));
		finish(c, it);
		break;
	}
	case KDBUS_CMD_ENDPOINT_UPDATE:
	case KDBUS_CMD_UPDATE: {
		struct kdbus_cmd *c = (void *)b;
		c->flags = random_flags(w, 0);
		it = c->items;
		if (cmd == KDBUS_CMD_UPDATE && chance(r, 2))
			it = put_u64(it, chance(r, 2) ? KDBUS_ITEM_ATTACH_FLAGS_SEND : KDBUS_ITEM_ATTACH_FLAGS_RECV,
				     chance(r, 2) ? below(r, _KDBUS_ATTACH_ALL + 1) : next_rand(r));
		if (cmd == KDBUS_CMD_ENDPOINT_UPDATE || chance(r, 4)) {
			it = put_string(it, KDBUS_ITEM_NAME, random_name(w));
			for (unsigned n = below(r, 3); n > 0; n--) {
				it->type = KDBUS_ITEM_POLICY_ACCESS;
				it->size = KDBUS_ITEM_HEADER_SIZE + sizeof(struct kdbus_policy_access);
				it->policy_access.type = below(r, 5);
				it->policy_access.access = below(r, 4);
				it->policy_access.id = chance(r, 2) ? geteuid() : next_rand(r);
				it = KDBUS_ITEM_NEXT(it);
			}
		}
		it = put_random_items(w, it, chance(r, 4));
		finish(c, it);
		break;
	}
	case KDBUS_CMD_HELLO: {
		struct kdbus_cmd_hello *h = (void *)b;
		static const uint64_t pools[] = { 4096, 65536, 1 << 20, 0, 4097 };
		h->flags = chance(r, 2) ? KDBUS_HELLO_ACCEPT_FD : random_flags(w, 0xf);
		h->attach_flags_send = chance(r, 2) ? _KDBUS_ATTACH_ALL : next_rand(r) & 0x7fff;
		h->attach_flags_recv = chance(r, 2) ? _KDBUS_ATTACH_ALL : next_rand(r) & 0x7fff;
		h->pool_size = chance(r, 8) ? next_rand(r) : pools[below(r, 3 + chance(r, 4) * 2)];
		it = h->items;
		if (h->flags & (KDBUS_HELLO_ACTIVATOR | KDBUS_HELLO_POLICY_HOLDER) || chance(r, 10))
			it = put_string(it, KDBUS_ITEM_NAME, random_name(w));
		if (chance(r, 8)) {
			it->type = KDBUS_ITEM_PIDS;
			it->size = KDBUS_ITEM_HEADER_SIZE + (chance(r, 2) ? sizeof(struct kdbus_pids) : below(r, 40));
			it->pids.pid = getpid();
			it->pids.tid = chance(r, 2) ? (uint64_t)syscall(SYS_gettid) : next_rand(r);
			it->pids.ppid = getppid();
			it = KDBUS_ITEM_NEXT(it);
		}
		if (chance(r, 8)) {
			it->type = KDBUS_ITEM_CREDS;
			it->size = KDBUS_ITEM_HEADER_SIZE + (chance(r, 2) ? sizeof(struct kdbus_creds) : below(r, 72));
			memset(&it->creds, 0, sizeof(it->creds));
			it->creds.uid = it->creds.euid = geteuid();
			it = KDBUS_ITEM_NEXT(it);
		}
		if (chance(r, 10))
			it = put_string(it, KDBUS_ITEM_SECLABEL, "unconfined");
		if (chance(r, 6))
			it = put_string(it, KDBUS_ITEM_CONN_DESCRIPTION, chance(r, 4) ? "-bad" : "fuzzer");
		it = put_random_items(w, it, chance(r, 4));
		finish(h, it);
		break;
	}
	case KDBUS_CMD_BYEBYE:
	case KDBUS_CMD_BUS_CREATOR_INFO:
	case KDBUS_CMD_CONN_INFO: {
		struct kdbus_cmd_info *c = (void *)b;
		c->flags = random_flags(w, 0);
		c->id = random_id(w);
		c->attach_flags = chance(r, 2) ? _KDBUS_ATTACH_ALL : next_rand(r);
		it = (void *)((uint8_t *)c + (cmd == KDBUS_CMD_BYEBYE ? sizeof(struct kdbus_cmd) : sizeof(*c)));
		if (cmd == KDBUS_CMD_CONN_INFO && chance(r, 3))
			it = put_string(it, KDBUS_ITEM_NAME, random_name(w));
		it = put_random_items(w, it, chance(r, 8));
		finish(c, it);
		break;
	}
	case KDBUS_CMD_FREE: {
		struct kdbus_cmd_free *c = (void *)b;
		c->flags = random_flags(w, 0);
		c->offset = chance(r, 2) ? s->recent_offset : (chance(r, 2) ? below(r, 1 << 20) & ~7ULL : next_rand(r));
		it = put_random_items(w, c->items, chance(r, 8));
		finish(c, it);
		break;
	}
	case KDBUS_CMD_LIST: {
		struct kdbus_cmd_list *c = (void *)b;
		c->flags = random_flags(w, 0xf);
		it = put_random_items(w, c->items, chance(r, 8));
		finish(c, it);
		break;
	}
	case KDBUS_CMD_SEND: {
		struct kdbus_cmd_send *c = (void *)b;
		c->flags = chance(r, 4) ? KDBUS_SEND_SYNC_REPLY : random_flags(w, 0);
		*may_block = (c->flags & KDBUS_SEND_SYNC_REPLY) && !(c->flags & KDBUS_FLAG_NEGOTIATE);
		build_message(w, *may_block);
		c->msg_address = chance(r, 16) ? random_address(w) : (uintptr_t)w->msg;
		it = c->items;
		if (chance(r, 8)) {
			it->type = KDBUS_ITEM_CANCEL_FD;
			it->size = KDBUS_ITEM_HEADER_SIZE + (chance(r, 4) ? below(r, 12) : 4);
			it->data32[0] = random_fd(w);
			it = KDBUS_ITEM_NEXT(it);
		}
		it = put_random_items(w, it, chance(r, 8));
		finish(c, it);
		if (*may_block)
			return c;  /* no blind mutation: the call's deadline must hold */
		break;
	}
	case KDBUS_CMD_RECV: {
		struct kdbus_cmd_recv *c = (void *)b;
		c->flags = chance(r, 2) ? 0 : random_flags(w, 0x7);
		c->priority = (int64_t)below(r, 5) - 2;
		it = put_random_items(w, c->items, chance(r, 8));
		finish(c, it);
		break;
	}
	case KDBUS_CMD_NAME_ACQUIRE:
	case KDBUS_CMD_NAME_RELEASE: {
		struct kdbus_cmd *c = (void *)b;
		c->flags = random_flags(w, 0x7f);
		it = put_string(c->items, KDBUS_ITEM_NAME, chance(r, 10) ? "no-dots" : random_name(w));
		it = put_random_items(w, it, chance(r, 8));
		finish(c, it);
		break;
	}
	case KDBUS_CMD_MATCH_ADD:
	case KDBUS_CMD_MATCH_REMOVE: {
		struct kdbus_cmd_match *c = (void *)b;
		c->flags = random_flags(w, 1);
		c->cookie = below(r, 4);
		it = c->items;
		if (cmd == KDBUS_CMD_MATCH_ADD) {
			for (unsigned n = below(r, 3); n > 0; n--) {
				switch (below(r, 5)) {
				case 0:
					it->type = KDBUS_ITEM_BLOOM_MASK;
					it->size = KDBUS_ITEM_HEADER_SIZE + (chance(r, 4) ? 8 * below(r, 20) : 64);
					memset(it->data, 0xff, it->size - KDBUS_ITEM_HEADER_SIZE);
					it = KDBUS_ITEM_NEXT(it);
					break;
				case 1: it = put_string(it, KDBUS_ITEM_NAME, random_name(w)); break;
				case 2: it = put_u64(it, chance(r, 2) ? KDBUS_ITEM_ID : KDBUS_ITEM_DST_ID, random_id(w)); break;
				case 3:
					it->type = chance(r, 2) ? KDBUS_ITEM_ID_ADD : KDBUS_ITEM_ID_REMOVE;
					it->size = KDBUS_ITEM_HEADER_SIZE + sizeof(struct kdbus_notify_id_change);
					it->id_change.id = random_id(w);
					it->id_change.flags = 0;
					it = KDBUS_ITEM_NEXT(it);
					break;
				default:
					it->type = KDBUS_ITEM_NAME_ADD + below(r, 3);
					it->size = KDBUS_ITEM_HEADER_SIZE + sizeof(struct kdbus_notify_name_change);
					memset(it->data, 0, sizeof(struct kdbus_notify_name_change));
					it->name_change.old_id.id = random_id(w);
					it->name_change.new_id.id = random_id(w);
					if (chance(r, 2)) {
						const char *watched = random_name(w);
						strcpy((char *)it->data + sizeof(struct kdbus_notify_name_change), watched);
						it->size += strlen(watched) + 1;
					}
					it = KDBUS_ITEM_NEXT(it);
					break;
				}
			}
		}
		it = put_random_items(w, it, chance(r, 8));
		finish(c, it);
		break;
	}
	default: {
		/* An ioctl number kdbus does not have, or one of its own with a random struct. */
		for (int i = 0; i < 32; i++)
			b[i] = chance(r, 2) ? below(r, 256) : next_rand(r);
		b[0] = below(r, 256) & ~7ULL;
		break;
	}
	}
	/* Blind mutations of the whole struct. */
	if (chance(r, 8))
		((uint8_t *)b)[below(r, 256)] ^= 1 << below(r, 8);
	if (chance(r, 32))
		b[0] = chance(r, 2) ? below(r, 33000) : next_rand(r);
	if (chance(r, 40)) {
		static const uintptr_t bad[] = { 0, 1, 8, 0xffffffff81000000ULL };
		switch (below(r, 4)) {
		case 0: return (void *)bad[below(r, 4)];
		case 1: return (uint8_t *)b + 4;
		case 2: return w->edge;
		default: return (void *)(uintptr_t)next_rand(r);
		}
	}
	return b;
}

static const unsigned long COMMANDS[] = {
	KDBUS_CMD_BUS_MAKE, KDBUS_CMD_ENDPOINT_MAKE, KDBUS_CMD_ENDPOINT_UPDATE, KDBUS_CMD_HELLO, KDBUS_CMD_UPDATE,
	KDBUS_CMD_BYEBYE, KDBUS_CMD_FREE, KDBUS_CMD_CONN_INFO, KDBUS_CMD_BUS_CREATOR_INFO, KDBUS_CMD_LIST,
	KDBUS_CMD_SEND, KDBUS_CMD_RECV, KDBUS_CMD_NAME_ACQUIRE, KDBUS_CMD_NAME_RELEASE, KDBUS_CMD_MATCH_ADD,
	KDBUS_CMD_MATCH_REMOVE,
};
#define N_COMMANDS (sizeof(COMMANDS) / sizeof(COMMANDS[0]))

/* Mostly a command the handle can run (so that it gets past the handle check), sometimes any. */
static unsigned long aim(struct worker *w, struct slot *s)
{
	struct rng *r = &w->rng;
	if (chance(r, 64))
		return _IOWR(KDBUS_IOCTL_MAGIC, below(r, 256), struct kdbus_cmd);
	if (chance(r, 8))
		return COMMANDS[below(r, N_COMMANDS)];
	if (s->kind == CONTROL)
		return s->dead ? COMMANDS[below(r, N_COMMANDS)] : KDBUS_CMD_BUS_MAKE;
	if (s->owns_endpoint)
		return KDBUS_CMD_ENDPOINT_UPDATE;
	if (!s->connected)
		return chance(r, 6) ? KDBUS_CMD_ENDPOINT_MAKE : KDBUS_CMD_HELLO;
	/* Connection commands, SEND and RECV the most. */
	static const unsigned long CONNECTED[] = {
		KDBUS_CMD_UPDATE, KDBUS_CMD_BYEBYE, KDBUS_CMD_FREE, KDBUS_CMD_CONN_INFO, KDBUS_CMD_BUS_CREATOR_INFO,
		KDBUS_CMD_LIST, KDBUS_CMD_NAME_ACQUIRE, KDBUS_CMD_NAME_RELEASE, KDBUS_CMD_MATCH_ADD,
		KDBUS_CMD_MATCH_REMOVE, KDBUS_CMD_SEND, KDBUS_CMD_SEND, KDBUS_CMD_SEND, KDBUS_CMD_SEND,
		KDBUS_CMD_RECV, KDBUS_CMD_RECV, KDBUS_CMD_RECV,
	};
	return CONNECTED[below(r, sizeof(CONNECTED) / sizeof(CONNECTED[0]))];
}

static void reopen(struct worker *w, struct slot *s)
{
	char path[4096];
	if (s->fd >= 0)
		close(s->fd);
	*s = (struct slot){ .fd = -1, .kind = EMPTY };
	switch (below(&w->rng, 6)) {
	case 0:
		snprintf(path, sizeof(path), "%s/control", root);
		s->kind = CONTROL;
		break;
	case 1:  /* a custom endpoint some thread may have made */
		snprintf(path, sizeof(path), "%s/%s/%u-ep%d-%u", root, main_bus, geteuid(),
			 (int)below(&w->rng, MAX_THREADS), (unsigned)below(&w->rng, 3));
		s->kind = ENDPOINT;
		break;
	case 2:  /* a bus some thread may have made */
		snprintf(path, sizeof(path), "%s/%u-fz%d-%u/bus", root, geteuid(),
			 (int)below(&w->rng, MAX_THREADS), (unsigned)below(&w->rng, 4));
		s->kind = ENDPOINT;
		break;
	default:
		snprintf(path, sizeof(path), "%s/%s/bus", root, main_bus);
		s->kind = ENDPOINT;
		break;
	}
	s->fd = open(path, O_RDWR | O_CLOEXEC);
	if (s->fd < 0)
		s->kind = EMPTY;
}

static int allowed(int err)
{
	for (size_t i = 0; i < sizeof(KDBUS_ERRNOS) / sizeof(int); i++)
		if (KDBUS_ERRNOS[i] == err)
			return 1;
	return 0;
}

static void *fuzz_thread(void *arg)
{
	struct worker *w = arg;
	long page = sysconf(_SC_PAGESIZE);
	uint8_t *pages = mmap(NULL, 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(pages != MAP_FAILED && mprotect(pages + page, page, PROT_NONE) == 0, "guard page");
	w->edge = pages + page - 8;
	CHECK(pipe2(w->pipe_fds, O_CLOEXEC) == 0, "pipe");
	w->plain_memfd = memfd_create("fuzz", MFD_ALLOW_SEALING | MFD_CLOEXEC);
	w->sealed_memfd = memfd_create("fuzz-sealed", MFD_ALLOW_SEALING | MFD_CLOEXEC);
	CHECK(w->plain_memfd >= 0 && w->sealed_memfd >= 0, "memfd");
	CHECK(write(w->sealed_memfd, "0123456789abcdef0123", 20) == 20 &&
	      fcntl(w->sealed_memfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) == 0,
	      "sealed memfd");
	for (size_t i = 0; i < sizeof(w->payload); i++)
		w->payload[i] = (uint8_t)i;
	for (int i = 0; i < SLOTS; i++) {
		w->slots[i].fd = -1;
		reopen(w, &w->slots[i]);
	}
	while (w->ioctls < iterations_per_thread) {
		struct slot *s = &w->slots[below(&w->rng, SLOTS)];
		if (s->kind == EMPTY || chance(&w->rng, 64)) {
			reopen(w, s);
			continue;
		}
		if (s->dead && chance(&w->rng, 4)) {
			reopen(w, s);
			continue;
		}
		unsigned long cmd = aim(w, s);
		int may_block;
		void *arg_ptr = build_command(w, s, cmd, &may_block);
		/* A negotiating command succeeds without doing anything. */
		int negotiating = arg_ptr == w->buf && (w->buf[1] & KDBUS_FLAG_NEGOTIATE);
		errno = 0;
		int ret = ioctl(s->fd, cmd, arg_ptr);
		int err = ret < 0 ? errno : 0;
		w->ioctls++;
		w->errnos[err < 4096 ? err : 0]++;
		if (err == ECONNRESET || err == ESHUTDOWN)
			s->dead = 1;
		if (ret < 0 && !allowed(err) && !w->bad_errno) {
			w->bad_errno = err;
			w->bad_cmd = cmd;
		}
		if (ret == 0 && arg_ptr == w->buf && !negotiating) {
			if (cmd == KDBUS_CMD_HELLO) {
				struct kdbus_cmd_hello *h = (void *)w->buf;
				s->connected = 1;
				s->recent_offset = h->offset;
				remember_id(h->id);
			} else if (cmd == KDBUS_CMD_ENDPOINT_MAKE) {
				s->owns_endpoint = 1;
			} else if (cmd == KDBUS_CMD_BUS_MAKE) {
				/* The bus lives while this fd does: replace it before long. */
				s->dead = 1;
			} else if (cmd == KDBUS_CMD_RECV) {
				struct kdbus_cmd_recv *c = (void *)w->buf;
				s->recent_offset = c->msg.offset;
				/* Mostly give the slice back, so pools do not stay full. */
				if (!chance(&w->rng, 4))
					free_slice(s->fd, c->msg.offset);
			} else if (cmd == KDBUS_CMD_CONN_INFO || cmd == KDBUS_CMD_BUS_CREATOR_INFO) {
				struct kdbus_cmd_info *c = (void *)w->buf;
				s->recent_offset = c->offset;
				if (!chance(&w->rng, 4))
					free_slice(s->fd, c->offset);
			} else if (cmd == KDBUS_CMD_LIST) {
				struct kdbus_cmd_list *c = (void *)w->buf;
				s->recent_offset = c->offset;
				if (!chance(&w->rng, 4))
					free_slice(s->fd, c->offset);
			} else if (cmd == KDBUS_CMD_SEND && may_block) {
				struct kdbus_cmd_send *c = (void *)w->buf;
				free_slice(s->fd, c->reply.offset);
			}
		}
		(void)may_block;
	}
	for (int i = 0; i < SLOTS; i++)
		if (w->slots[i].fd >= 0)
			close(w->slots[i].fd);
	return NULL;
}

/* -- the bystander pair: b answers every call of a with its payload; a checks each answer ------- */

static struct conn by_a, by_b;
static uint64_t bystander_calls;
static char bystander_failure[256];

static void *bystander_callee(void *arg)
{
	(void)arg;
	while (!__atomic_load_n(&stop_callee, __ATOMIC_RELAXED)) {
		struct pollfd p = { .fd = by_b.fd, .events = POLLIN };
		if (poll(&p, 1, 50) <= 0)
			continue;
		struct kdbus_cmd_recv recv;
		while (recv_msg(&by_b, &recv, 0, 0) == 0) {
			const struct kdbus_msg *m = (const void *)(by_b.pool + recv.msg.offset);
			uint64_t len = 0;
			const uint8_t *data = payload_of(m, &len);
			if (m->src_id == by_a.id && (m->flags & KDBUS_MSG_EXPECT_REPLY) && data) {
				uint64_t reply_buf[512];
				struct kdbus_msg *reply = build_msg(reply_buf, by_a.id, NULL, data, len, 0, m->cookie + 1);
				reply->cookie_reply = m->cookie;
				if (send_msg(by_b.fd, reply, 0, NULL) != 0)
					snprintf(bystander_failure, sizeof(bystander_failure), "reply: %s", strerror(errno));
			}
			/* Anything else (fuzzers aim at us too) is dropped. */
			free_slice(by_b.fd, recv.msg.offset);
		}
	}
	return NULL;
}

static void *bystander_caller(void *arg)
{
	(void)arg;
	uint64_t msg_buf[512];
	char text[64];
	struct kdbus_cmd_recv recv;
	for (uint64_t n = 1; !__atomic_load_n(&stop_bystander, __ATOMIC_RELAXED) && !bystander_failure[0]; n++) {
		int len = snprintf(text, sizeof(text), "call %llu", (unsigned long long)n);
		struct kdbus_msg *m = build_msg(msg_buf, by_b.id, NULL, text, len, KDBUS_MSG_EXPECT_REPLY, n * 2);
		m->timeout_ns = now_ns() + 10ULL * 1000000000ULL;
		struct kdbus_cmd_send send;
		if (send_msg(by_a.fd, m, KDBUS_SEND_SYNC_REPLY, &send) != 0) {
			snprintf(bystander_failure, sizeof(bystander_failure), "call %llu: %s", (unsigned long long)n,
				 strerror(errno));
			break;
		}
		const struct kdbus_msg *reply = (const void *)(by_a.pool + send.reply.offset);
		uint64_t got_len = 0;
		const uint8_t *got = payload_of(reply, &got_len);
		if (reply->cookie_reply != n * 2 || !got || got_len != (uint64_t)len || memcmp(got, text, len) != 0)
			snprintf(bystander_failure, sizeof(bystander_failure), "call %llu: wrong answer",
				 (unsigned long long)n);
		free_slice(by_a.fd, send.reply.offset);
		/* Fuzzers send to a as well: drop whatever they queued. */
		while (recv_msg(&by_a, &recv, 0, 0) == 0)
			free_slice(by_a.fd, recv.msg.offset);
		__atomic_store_n(&bystander_calls, n, __ATOMIC_RELAXED);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	CHECK(argc >= 4, "usage: fuzz MOUNT_ROOT IOCTLS SEED [THREADS]");
	root = argv[1];
	uint64_t total = strtoull(argv[2], NULL, 0);
	uint64_t seed = strtoull(argv[3], NULL, 0);
	int threads = argc > 4 ? atoi(argv[4]) : 4;
	CHECK(threads >= 1 && threads <= MAX_THREADS, "1..%d threads", MAX_THREADS);
	iterations_per_thread = (total + threads - 1) / threads;
	char suffix[32];
	snprintf(suffix, sizeof(suffix), "fuzz%d", getpid());
	int owner = make_bus(root, suffix, main_bus, sizeof(main_bus));
	hello(&by_a, root, main_bus, 0);
	hello(&by_b, root, main_bus, 0);
	remember_id(by_a.id);
	remember_id(by_b.id);

	pthread_t callee, caller, workers[MAX_THREADS];
	static struct worker w[MAX_THREADS];
	uint64_t start = now_ns();
	CHECK(pthread_create(&callee, NULL, bystander_callee, NULL) == 0, "callee thread");
	CHECK(pthread_create(&caller, NULL, bystander_caller, NULL) == 0, "caller thread");
	for (int i = 0; i < threads; i++) {
		w[i].index = i;
		w[i].rng.s = seed * 0x9E3779B97F4A7C15ULL + i + 1;
		CHECK(pthread_create(&workers[i], NULL, fuzz_thread, &w[i]) == 0, "fuzz thread");
	}
	for (int i = 0; i < threads; i++)
		pthread_join(workers[i], NULL);
	__atomic_store_n(&stop_bystander, 1, __ATOMIC_RELAXED);
	pthread_join(caller, NULL);
	__atomic_store_n(&stop_callee, 1, __ATOMIC_RELAXED);
	pthread_join(callee, NULL);
	double seconds = (now_ns() - start) / 1e9;

	uint64_t ioctls = 0, histogram[4096] = {0};
	int failed = 0;
	for (int i = 0; i < threads; i++) {
		ioctls += w[i].ioctls;
		for (int e = 0; e < 4096; e++)
			histogram[e] += w[i].errnos[e];
		if (w[i].bad_errno) {
			fprintf(stderr, "FAIL ioctl %#lx answered errno %d (%s), which kdbus never returns\n",
				w[i].bad_cmd, w[i].bad_errno, strerror(w[i].bad_errno));
			failed = 1;
		}
	}
	printf("ioctls %llu seconds %.1f bystander_calls %llu seed %llu threads %d\n", (unsigned long long)ioctls,
	       seconds, (unsigned long long)bystander_calls, (unsigned long long)seed, threads);
	for (int e = 0; e < 4096; e++)
		if (histogram[e])
			printf("errno %s %llu\n", e ? strerrorname_np(e) : "OK", (unsigned long long)histogram[e]);
	if (bystander_failure[0]) {
		fprintf(stderr, "FAIL bystander: %s\n", bystander_failure);
		failed = 1;
	}
	if (bystander_calls == 0) {
		fprintf(stderr, "FAIL bystander made no call\n");
		failed = 1;
	}
	close(by_a.fd);
	close(by_b.fd);
	close(owner);
	if (failed)
		return 1;
	printf("fuzz: all checks passed\n");
	return 0;
}
