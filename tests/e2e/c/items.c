/* Items whose payload has the wrong size: every item each command takes, at sizes around and away
 * from its real one, gets EINVAL (kdbus's item validation) and the daemon keeps serving.
 * usage: items MOUNT_ROOT */
#include "msgutil.h"

/* How a payload of each item type must look (KDBUS-SPEC.md §2.2 rule 7). */
enum shape { STRUCT, STRING, SYSNAME, NAME_CHANGE };

struct rule {
	uint64_t type;
	const char *name;
	enum shape shape;
	int exact;     /* payload size, or -1 */
	int minimum;
	int multiple;
};

static const struct rule RULES[] = {
	{ KDBUS_ITEM_NEGOTIATE, "NEGOTIATE", STRUCT, -1, 0, 8 },
	{ KDBUS_ITEM_PAYLOAD_VEC, "PAYLOAD_VEC", STRUCT, sizeof(struct kdbus_vec), 0, 1 },
	{ KDBUS_ITEM_PAYLOAD_MEMFD, "PAYLOAD_MEMFD", STRUCT, sizeof(struct kdbus_memfd), 0, 1 },
	{ KDBUS_ITEM_FDS, "FDS", STRUCT, -1, 0, 4 },
	{ KDBUS_ITEM_CANCEL_FD, "CANCEL_FD", STRUCT, 4, 0, 1 },
	{ KDBUS_ITEM_BLOOM_PARAMETER, "BLOOM_PARAMETER", STRUCT, sizeof(struct kdbus_bloom_parameter), 0, 1 },
	{ KDBUS_ITEM_BLOOM_FILTER, "BLOOM_FILTER", STRUCT, -1, 8, 1 },
	{ KDBUS_ITEM_DST_NAME, "DST_NAME", STRING, -1, 0, 1 },
	{ KDBUS_ITEM_MAKE_NAME, "MAKE_NAME", SYSNAME, -1, 0, 1 },
	{ KDBUS_ITEM_ATTACH_FLAGS_SEND, "ATTACH_FLAGS_SEND", STRUCT, 8, 0, 1 },
	{ KDBUS_ITEM_ATTACH_FLAGS_RECV, "ATTACH_FLAGS_RECV", STRUCT, 8, 0, 1 },
	{ KDBUS_ITEM_ID, "ID", STRUCT, 8, 0, 1 },
	{ KDBUS_ITEM_NAME, "NAME", STRING, -1, 0, 1 },
	{ KDBUS_ITEM_DST_ID, "DST_ID", STRUCT, 8, 0, 1 },
	{ KDBUS_ITEM_CREDS, "CREDS", STRUCT, sizeof(struct kdbus_creds), 0, 1 },
	{ KDBUS_ITEM_PIDS, "PIDS", STRUCT, sizeof(struct kdbus_pids), 0, 1 },
	{ KDBUS_ITEM_SECLABEL, "SECLABEL", STRING, -1, 0, 1 },
	{ KDBUS_ITEM_CONN_DESCRIPTION, "CONN_DESCRIPTION", SYSNAME, -1, 0, 1 },
	{ KDBUS_ITEM_POLICY_ACCESS, "POLICY_ACCESS", STRUCT, sizeof(struct kdbus_policy_access), 0, 1 },
	{ KDBUS_ITEM_NAME_ADD, "NAME_ADD", NAME_CHANGE, -1, 32, 1 },
	{ KDBUS_ITEM_NAME_REMOVE, "NAME_REMOVE", NAME_CHANGE, -1, 32, 1 },
	{ KDBUS_ITEM_NAME_CHANGE, "NAME_CHANGE", NAME_CHANGE, -1, 32, 1 },
	{ KDBUS_ITEM_ID_ADD, "ID_ADD", STRUCT, sizeof(struct kdbus_notify_id_change), 0, 1 },
	{ KDBUS_ITEM_ID_REMOVE, "ID_REMOVE", STRUCT, sizeof(struct kdbus_notify_id_change), 0, 1 },
};

static const int SIZES[] = { 0, 1, 2, 4, 7, 8, 9, 12, 15, 16, 17, 20, 22, 23, 24, 25, 28, 31, 32, 33,
			     40, 48, 56, 63, 64, 65, 72, 80, 120 };
#define N_SIZES (sizeof(SIZES) / sizeof(SIZES[0]))

static const struct rule *rule_of(uint64_t type)
{
	for (size_t i = 0; i < sizeof(RULES) / sizeof(RULES[0]); i++)
		if (RULES[i].type == type)
			return &RULES[i];
	CHECK(0, "no rule for item type %#llx", (unsigned long long)type);
	return NULL;
}

/* Payload fills: 0x01 bytes (small non-zero numbers; no NUL, so no string ends) and zeros. */
enum fill { ONES, ZEROS };

/* Whether a payload of `size` bytes and `fill` breaks the type's rule. */
static int breaks_rule(const struct rule *r, int size, enum fill fill)
{
	switch (r->shape) {
	case STRING:
		/* A string's first NUL must be its last byte. */
		return fill == ONES || size != 1;
	case SYSNAME:
		return 1;  /* ones: no NUL; zeros: an empty name */
	case NAME_CHANGE:
		/* The old and new owner, then an optional name that must end in its only NUL. */
		return size < 32 || (size > 32 && (fill == ONES || size != 33));
	case STRUCT:
		if (r->exact >= 0)
			return size != r->exact;
		return size < r->minimum || size % r->multiple;
	}
	return 0;
}

/* kdbus's errno for a broken rule: a name too long for a file name says so, anything else is EINVAL. */
static int errno_for(const struct rule *r, int size)
{
	return r->shape == SYSNAME && size > 64 ? ENAMETOOLONG : EINVAL;
}

static uint64_t buf[4096];
static uint64_t msg_buf[4096];
static int cases;

/* Copy `fixed` (its size field set to the total), then `base` items, then the item under test. */
static void *build(void *out, const void *fixed, size_t fixed_size, const void *base, size_t base_size,
		   uint64_t type, int size, enum fill fill)
{
	uint8_t *p = out;
	memset(out, 0, 4096);
	memcpy(p, fixed, fixed_size);
	memcpy(p + fixed_size, base, base_size);
	struct kdbus_item *it = (void *)(p + fixed_size + base_size);
	it->type = type;
	it->size = KDBUS_ITEM_HEADER_SIZE + size;
	memset(it->data, fill == ONES ? 0x01 : 0, size);
	*(uint64_t *)p = fixed_size + base_size + it->size;
	return out;
}

/* Every size of every type in `types` on one command: EINVAL whenever the size breaks the rule.
 * With `message`, the struct built is a kdbus_msg and goes out through SEND. */
static void sweep(const char *what, int fd, unsigned long cmd, const void *fixed, size_t fixed_size,
		  const void *base, size_t base_size, const uint64_t *types, size_t n_types, int message)
{
	for (size_t t = 0; t < n_types; t++) {
		const struct rule *r = rule_of(types[t]);
		int wrong = 0;
		for (size_t s = 0; s < N_SIZES; s++) {
			for (enum fill fill = ONES; fill <= ZEROS; fill++) {
				if (!breaks_rule(r, SIZES[s], fill))
					continue;
				build(buf, fixed, fixed_size, base, base_size, r->type, SIZES[s], fill);
				int want = errno_for(r, SIZES[s]);
				errno = 0;
				int ret = message ? send_msg(fd, (struct kdbus_msg *)buf, 0, NULL) : ioctl(fd, cmd, buf);
				CHECK(ret < 0 && errno == want, "%s with a %s item of %d %s bytes: want %s, got %d",
				      what, r->name, SIZES[s], fill == ONES ? "0x01" : "zero", strerror(want), ret);
				wrong++;
				cases++;
			}
		}
		OK("%s: %s at %d wrong sizes -> EINVAL (ENAMETOOLONG for long names)", what, r->name, wrong);
	}
}

/* The same for an item inside a SEND's message. */
static void sweep_message(int fd, uint64_t dst, const uint64_t *types, size_t n_types)
{
	struct kdbus_msg header = { .dst_id = dst, .payload_type = KDBUS_PAYLOAD_DBUS, .cookie = 1 };
	sweep("SEND message", fd, KDBUS_CMD_SEND, &header, sizeof(header), NULL, 0, types, n_types, 1);
}

/* A string item in `out`; returns its aligned size. */
static size_t string_item(void *out, uint64_t type, const char *text)
{
	struct kdbus_item *it = out;
	it->type = type;
	it->size = KDBUS_ITEM_HEADER_SIZE + strlen(text) + 1;
	strcpy(it->str, text);
	return KDBUS_ALIGN8(it->size);
}

static struct kdbus_item *put_name(struct kdbus_item *it, const char *name)
{
	return (void *)((uint8_t *)it + string_item(it, KDBUS_ITEM_NAME, name));
}

#define TYPES(...) (const uint64_t[]){ __VA_ARGS__ }, sizeof((const uint64_t[]){ __VA_ARGS__ }) / sizeof(uint64_t)

int main(int argc, char **argv)
{
	const char *root = argc > 1 ? argv[1] : "/sys/fs/kdbus";
	char bus[64], suffix[32], ep_name[64], path[4096];
	uint64_t base[64];
	size_t base_size;

	snprintf(suffix, sizeof(suffix), "items%d", getpid());
	int owner = make_bus(root, suffix, bus, sizeof(bus));

	/* BUS_MAKE: its three items, with the other mandatory ones valid. */
	{
		snprintf(path, sizeof(path), "%s/control", root);
		int control = open(path, O_RDWR | O_CLOEXEC);
		CHECK(control >= 0, "open control");
		struct kdbus_cmd fixed = { 0 };
		char name[64];
		snprintf(name, sizeof(name), "%u-items-new%d", geteuid(), getpid());
		struct kdbus_item *bloom = (void *)base;
		bloom->type = KDBUS_ITEM_BLOOM_PARAMETER;
		bloom->size = KDBUS_ITEM_HEADER_SIZE + sizeof(struct kdbus_bloom_parameter);
		bloom->bloom_parameter.size = 64;
		bloom->bloom_parameter.n_hash = 1;
		base_size = KDBUS_ALIGN8(bloom->size);
		sweep("BUS_MAKE", control, KDBUS_CMD_BUS_MAKE, &fixed, sizeof(fixed), base, base_size,
		      TYPES(KDBUS_ITEM_MAKE_NAME), 0);
		base_size += string_item((uint8_t *)base + base_size, KDBUS_ITEM_MAKE_NAME, name);
		sweep("BUS_MAKE", control, KDBUS_CMD_BUS_MAKE, &fixed, sizeof(fixed), base, base_size,
		      TYPES(KDBUS_ITEM_ATTACH_FLAGS_SEND, KDBUS_ITEM_NEGOTIATE), 0);
		base_size = string_item(base, KDBUS_ITEM_MAKE_NAME, name);
		sweep("BUS_MAKE", control, KDBUS_CMD_BUS_MAKE, &fixed, sizeof(fixed), base, base_size,
		      TYPES(KDBUS_ITEM_BLOOM_PARAMETER), 0);
		/* The handle is still fresh: a good BUS_MAKE on it works. */
		CHECK(ioctl(control, KDBUS_CMD_BUS_MAKE, make_bus_cmd(buf, name, 0)) == 0, "BUS_MAKE after the sweep");
		OK("BUS_MAKE works on the same handle afterwards");
		close(control);
	}

	/* HELLO by the bus owner: the faked metadata items and everything else it takes. */
	struct kdbus_cmd_hello hello_fixed = { .pool_size = POOL_SIZE };
	int fresh = open_bus(root, bus);
	CHECK(fresh >= 0, "open bus");
	sweep("HELLO", fresh, KDBUS_CMD_HELLO, &hello_fixed, sizeof(hello_fixed), NULL, 0,
	      TYPES(KDBUS_ITEM_CREDS, KDBUS_ITEM_PIDS, KDBUS_ITEM_SECLABEL, KDBUS_ITEM_CONN_DESCRIPTION,
		    KDBUS_ITEM_NAME, KDBUS_ITEM_POLICY_ACCESS, KDBUS_ITEM_NEGOTIATE), 0);
	{
		/* With the other faked items valid, so each is checked in company too. */
		struct kdbus_item *pids = (void *)base;
		pids->type = KDBUS_ITEM_PIDS;
		pids->size = KDBUS_ITEM_HEADER_SIZE + sizeof(struct kdbus_pids);
		pids->pids.pid = getpid();
		pids->pids.tid = getpid();
		pids->pids.ppid = getppid();
		base_size = KDBUS_ALIGN8(pids->size);
		sweep("HELLO with PIDS", fresh, KDBUS_CMD_HELLO, &hello_fixed, sizeof(hello_fixed), base,
		      base_size, TYPES(KDBUS_ITEM_CREDS, KDBUS_ITEM_SECLABEL), 0);
		struct kdbus_item *creds = (void *)base;
		creds->type = KDBUS_ITEM_CREDS;
		creds->size = KDBUS_ITEM_HEADER_SIZE + sizeof(struct kdbus_creds);
		memset(&creds->creds, 0, sizeof(creds->creds));
		creds->creds.uid = creds->creds.euid = creds->creds.suid = creds->creds.fsuid = geteuid();
		creds->creds.gid = creds->creds.egid = creds->creds.sgid = creds->creds.fsgid = getegid();
		base_size = KDBUS_ALIGN8(creds->size);
		sweep("HELLO with CREDS", fresh, KDBUS_CMD_HELLO, &hello_fixed, sizeof(hello_fixed), base,
		      base_size, TYPES(KDBUS_ITEM_PIDS), 0);
		/* The handle is still fresh: HELLO with faked PIDS of the right size connects. */
		memset(buf, 0, 512);
		memcpy(buf, &hello_fixed, sizeof(hello_fixed));
		struct kdbus_cmd_hello *h = (void *)buf;
		struct kdbus_item *it = (void *)(h + 1);
		it->type = KDBUS_ITEM_PIDS;
		it->size = KDBUS_ITEM_HEADER_SIZE + sizeof(struct kdbus_pids);
		it->pids.pid = it->pids.tid = getpid();
		it->pids.ppid = getppid();
		h->size = sizeof(*h) + it->size;
		CHECK(ioctl(fresh, KDBUS_CMD_HELLO, h) == 0, "HELLO with faked PIDS of 24 bytes");
		OK("HELLO with faked PIDS of 24 bytes connects");
		close(fresh);
	}

	/* A HELLO that fails late (its activator's policy is refused once its pool exists) leaves the
	 * handle fresh: the next HELLO on it, with another pool size, connects. */
	{
		int fd = open_bus(root, bus);
		CHECK(fd >= 0, "open bus");
		struct kdbus_cmd_hello *h = (void *)buf;
		memset(buf, 0, 512);
		h->flags = KDBUS_HELLO_ACTIVATOR;
		h->pool_size = 1 << 20;
		struct kdbus_item *it = put_name(h->items, "org.items.activator");
		it->type = KDBUS_ITEM_POLICY_ACCESS;
		it->size = KDBUS_ITEM_HEADER_SIZE + sizeof(struct kdbus_policy_access);
		it->policy_access.type = KDBUS_POLICY_ACCESS_WORLD;
		it->policy_access.access = 9;  /* no such access level */
		it = KDBUS_ITEM_NEXT(it);
		h->size = (uint8_t *)it - (uint8_t *)h;
		EXPECT_ERRNO(EINVAL, fd, KDBUS_CMD_HELLO, h, "activator HELLO with an unknown access level");
		memset(buf, 0, 512);
		h->size = sizeof(*h);
		h->pool_size = POOL_SIZE;
		CHECK(ioctl(fd, KDBUS_CMD_HELLO, h) == 0, "HELLO with another pool size after a failed HELLO");
		uint8_t *pool = mmap(NULL, POOL_SIZE, PROT_READ, MAP_SHARED, fd, 0);
		CHECK(pool != MAP_FAILED, "mmap the pool");
		CHECK(free_slice(fd, h->offset) == 0, "FREE the bloom slice");
		OK("a HELLO after a failed HELLO on the same handle connects, with another pool size");
		munmap(pool, POOL_SIZE);
		close(fd);
	}

	/* ENDPOINT_MAKE and ENDPOINT_UPDATE. */
	{
		int ep_owner = open_bus(root, bus);
		CHECK(ep_owner >= 0, "open bus");
		struct kdbus_cmd fixed = { 0 };
		sweep("ENDPOINT_MAKE", ep_owner, KDBUS_CMD_ENDPOINT_MAKE, &fixed, sizeof(fixed), NULL, 0,
		      TYPES(KDBUS_ITEM_MAKE_NAME, KDBUS_ITEM_NEGOTIATE), 0);
		snprintf(ep_name, sizeof(ep_name), "%u-ep", geteuid());
		base_size = string_item(base, KDBUS_ITEM_MAKE_NAME, ep_name);
		struct kdbus_cmd *make = (void *)buf;
		memset(make, 0, sizeof(*make));
		memcpy(make->items, base, base_size);
		make->size = sizeof(*make) + base_size;
		CHECK(ioctl(ep_owner, KDBUS_CMD_ENDPOINT_MAKE, make) == 0, "ENDPOINT_MAKE after the sweep");
		OK("ENDPOINT_MAKE works on the same handle afterwards");
		sweep("ENDPOINT_UPDATE", ep_owner, KDBUS_CMD_ENDPOINT_UPDATE, &fixed, sizeof(fixed), NULL, 0,
		      TYPES(KDBUS_ITEM_NAME, KDBUS_ITEM_NEGOTIATE), 0);
		base_size = string_item(base, KDBUS_ITEM_NAME, "org.items.policy");
		sweep("ENDPOINT_UPDATE", ep_owner, KDBUS_CMD_ENDPOINT_UPDATE, &fixed, sizeof(fixed), base,
		      base_size, TYPES(KDBUS_ITEM_POLICY_ACCESS), 0);
		close(ep_owner);
	}

	/* Connection commands. */
	struct conn a, b;
	hello(&a, root, bus, KDBUS_HELLO_ACCEPT_FD);
	hello(&b, root, bus, KDBUS_HELLO_ACCEPT_FD);
	{
		struct kdbus_cmd fixed = { 0 };
		sweep("UPDATE", a.fd, KDBUS_CMD_UPDATE, &fixed, sizeof(fixed), NULL, 0,
		      TYPES(KDBUS_ITEM_ATTACH_FLAGS_SEND, KDBUS_ITEM_ATTACH_FLAGS_RECV, KDBUS_ITEM_NEGOTIATE), 0);
		sweep("NAME_ACQUIRE", a.fd, KDBUS_CMD_NAME_ACQUIRE, &fixed, sizeof(fixed), NULL, 0,
		      TYPES(KDBUS_ITEM_NAME, KDBUS_ITEM_NEGOTIATE), 0);
		sweep("NAME_RELEASE", a.fd, KDBUS_CMD_NAME_RELEASE, &fixed, sizeof(fixed), NULL, 0,
		      TYPES(KDBUS_ITEM_NAME, KDBUS_ITEM_NEGOTIATE), 0);
		struct kdbus_cmd_info info = { .id = b.id };
		sweep("CONN_INFO", a.fd, KDBUS_CMD_CONN_INFO, &info, sizeof(info), NULL, 0,
		      TYPES(KDBUS_ITEM_NAME, KDBUS_ITEM_NEGOTIATE), 0);
		struct kdbus_cmd_match match = { .cookie = 1 };
		sweep("MATCH_ADD", a.fd, KDBUS_CMD_MATCH_ADD, &match, sizeof(match), NULL, 0,
		      TYPES(KDBUS_ITEM_NAME, KDBUS_ITEM_ID, KDBUS_ITEM_DST_ID, KDBUS_ITEM_ID_ADD, KDBUS_ITEM_ID_REMOVE,
			    KDBUS_ITEM_NAME_ADD, KDBUS_ITEM_NAME_REMOVE, KDBUS_ITEM_NAME_CHANGE,
			    KDBUS_ITEM_NEGOTIATE), 0);
		static const char ping[] = "ping";
		struct kdbus_msg *m = build_msg(msg_buf, b.id, NULL, ping, sizeof(ping), 0, 7);
		struct kdbus_cmd_send send = { .msg_address = (uintptr_t)m };
		sweep("SEND", a.fd, KDBUS_CMD_SEND, &send, sizeof(send), NULL, 0,
		      TYPES(KDBUS_ITEM_CANCEL_FD, KDBUS_ITEM_NEGOTIATE), 0);
		sweep_message(a.fd, b.id, TYPES(KDBUS_ITEM_PAYLOAD_VEC, KDBUS_ITEM_PAYLOAD_MEMFD, KDBUS_ITEM_FDS,
						KDBUS_ITEM_BLOOM_FILTER, KDBUS_ITEM_DST_NAME));
	}

	/* Nothing of that reached b, and the bus still carries a message from a to b. */
	{
		struct kdbus_cmd_recv recv;
		errno = 0;
		CHECK(recv_msg(&b, &recv, 0, 0) < 0 && errno == EAGAIN, "b's queue is empty");
		static const char ping[] = "ping";
		struct kdbus_msg *m = build_msg(msg_buf, b.id, NULL, ping, sizeof(ping), 0, 9);
		CHECK(send_msg(a.fd, m, 0, NULL) == 0, "SEND after the sweep");
		CHECK(recv_msg(&b, &recv, 0, 0) == 0, "RECV after the sweep");
		const struct kdbus_msg *got = (const void *)(b.pool + recv.msg.offset);
		uint64_t len = 0;
		const uint8_t *data = payload_of(got, &len);
		CHECK(got->cookie == 9 && data && len == sizeof(ping) && memcmp(data, ping, len) == 0,
		      "the message arrived intact");
		CHECK(free_slice(b.fd, recv.msg.offset) == 0, "FREE");
		OK("a message still goes from a to b");
	}
	close(a.fd);
	close(b.fd);
	close(owner);
	printf("items: %d cases, all checks passed\n", cases);
	return 0;
}
