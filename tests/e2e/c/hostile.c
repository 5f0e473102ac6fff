/* Malformed and hostile input: every case gets kdbus's errno and the daemon keeps serving.
 * usage: hostile MOUNT_ROOT */
#include <sys/stat.h>

#include "util.h"

static uint64_t buf[8192];

/* A fresh control fd for each BUS_MAKE attempt, so no attempt can succeed by accident. */
static int control(const char *root)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/control", root);
	int fd = open(path, O_RDWR | O_CLOEXEC);
	CHECK(fd >= 0, "open control");
	return fd;
}

static void bus_make_expect(const char *root, int want, struct kdbus_cmd *cmd, const char *what)
{
	int fd = control(root);
	EXPECT_ERRNO(want, fd, KDBUS_CMD_BUS_MAKE, cmd, what);
	close(fd);
}

static struct kdbus_item *last_item(struct kdbus_cmd *cmd)
{
	struct kdbus_item *it = cmd->items, *last = it;
	while ((uint8_t *)it < (uint8_t *)cmd + cmd->size) {
		last = it;
		it = KDBUS_ITEM_NEXT(it);
	}
	return last;
}

int main(int argc, char **argv)
{
	const char *root = argc > 1 ? argv[1] : "/sys/fs/kdbus";
	char name[64], good_bus[64], suffix[32];
	struct kdbus_cmd *cmd;

	snprintf(name, sizeof(name), "%u-hostile%d", geteuid(), getpid());

	/* Lying sizes. */
	cmd = make_bus_cmd(buf, name, 0);
	cmd->size = 16;
	bus_make_expect(root, EINVAL, cmd, "BUS_MAKE size below the fixed struct");
	cmd = make_bus_cmd(buf, name, 0);
	cmd->size = 32769;
	bus_make_expect(root, EMSGSIZE, cmd, "BUS_MAKE size above 32 KiB");
	cmd = make_bus_cmd(buf, name, 0);
	cmd->size += 8;
	bus_make_expect(root, EINVAL, cmd, "BUS_MAKE size beyond the last item (zero item)");

	/* A struct whose size runs into an unmapped page. */
	long page = sysconf(_SC_PAGESIZE);
	uint8_t *two = mmap(NULL, 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(two != MAP_FAILED, "mmap");
	CHECK(mprotect(two + page, page, PROT_NONE) == 0, "mprotect");
	struct kdbus_cmd *edge = (void *)(two + page - 24);
	edge->size = 4096;
	edge->flags = 0;
	bus_make_expect(root, EFAULT, edge, "BUS_MAKE size reaching an unmapped page");
	struct kdbus_cmd_info *info_edge = (void *)(two + page - 8);
	info_edge->size = 56;

	/* Bad pointers. */
	bus_make_expect(root, EFAULT, NULL, "BUS_MAKE with a NULL pointer");
	bus_make_expect(root, EFAULT, (void *)0xffffffff81000000ULL, "BUS_MAKE with a kernel address");
	bus_make_expect(root, EFAULT, (void *)((uint8_t *)buf + 4), "BUS_MAKE unaligned");

	/* Item walking. */
	cmd = make_bus_cmd(buf, name, 0);
	last_item(cmd)->size = 8;
	bus_make_expect(root, EINVAL, cmd, "item smaller than its header");
	cmd = make_bus_cmd(buf, name, 0);
	last_item(cmd)->size = 0;
	bus_make_expect(root, EINVAL, cmd, "item of size 0 (would loop)");
	cmd = make_bus_cmd(buf, name, 0);
	last_item(cmd)->size = 1ULL << 63;
	bus_make_expect(root, EINVAL, cmd, "item size 2^63");
	cmd = make_bus_cmd(buf, name, 0);
	last_item(cmd)->size += 64;
	bus_make_expect(root, EINVAL, cmd, "item reaching past the struct");
	cmd = make_bus_cmd(buf, name, 0);
	last_item(cmd)->type = 0x7777;
	bus_make_expect(root, EINVAL, cmd, "unknown item type");
	cmd = make_bus_cmd(buf, name, 0);
	{
		struct kdbus_item *it = last_item(cmd);
		size_t sz = KDBUS_ALIGN8(it->size);
		memcpy((uint8_t *)it + sz, it, it->size);
		cmd->size += sz;
	}
	bus_make_expect(root, EINVAL, cmd, "MAKE_NAME given twice");
	cmd = make_bus_cmd(buf, name, 0);
	last_item(cmd)->str[strlen(name)] = 'x';
	bus_make_expect(root, EINVAL, cmd, "name without its NUL");
	cmd = make_bus_cmd(buf, name, 1ULL << 20);
	bus_make_expect(root, EINVAL, cmd, "unknown BUS_MAKE flag");
	cmd = make_bus_cmd(buf, "hostile-no-uid", 0);
	bus_make_expect(root, EINVAL, cmd, "bus name without the uid prefix");
	{
		char longname[80];
		snprintf(longname, sizeof(longname), "%u-%s", geteuid(),
			 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
		cmd = make_bus_cmd(buf, longname, 0);
		bus_make_expect(root, ENAMETOOLONG, cmd, "bus name of 70 characters");
	}
	cmd = make_bus_cmd(buf, name, 0);
	cmd->items[0].bloom_parameter.size = 12;
	bus_make_expect(root, EINVAL, cmd, "bloom size not a multiple of 8");
	cmd = make_bus_cmd(buf, name, 0);
	cmd->size = 24 + KDBUS_ALIGN8(cmd->items[0].size);  /* keep only the bloom item */
	bus_make_expect(root, EINVAL, cmd, "BUS_MAKE without MAKE_NAME");

	/* Negotiation: flags come back, nothing is created, the handle stays fresh. */
	{
		int fd = control(root);
		cmd = make_bus_cmd(buf, name, KDBUS_FLAG_NEGOTIATE);
		CHECK(ioctl(fd, KDBUS_CMD_BUS_MAKE, cmd) == 0, "negotiating BUS_MAKE");
		CHECK(cmd->flags == (KDBUS_MAKE_ACCESS_GROUP | KDBUS_MAKE_ACCESS_WORLD),
		      "negotiated flags %llx", (unsigned long long)cmd->flags);
		cmd = make_bus_cmd(buf, name, 0);
		CHECK(ioctl(fd, KDBUS_CMD_BUS_MAKE, cmd) == 0, "BUS_MAKE after negotiation");
		OK("negotiation answers the allowed flags and leaves the handle usable");
		cmd = make_bus_cmd(buf, name, 0);
		EXPECT_ERRNO(EBADFD, fd, KDBUS_CMD_BUS_MAKE, cmd, "second BUS_MAKE on one handle");
		int other = control(root);
		EXPECT_ERRNO(EEXIST, other, KDBUS_CMD_BUS_MAKE, cmd, "BUS_MAKE of an existing name");
		close(other);
		close(fd);
	}

	/* HELLO misuse on a live bus. */
	snprintf(suffix, sizeof(suffix), "hostile-ok%d", getpid());
	int owner = make_bus(root, suffix, good_bus, sizeof(good_bus));
	int fd = open_bus(root, good_bus);
	CHECK(fd >= 0, "open bus");
	struct kdbus_cmd_hello *h = (void *)buf;
	memset(buf, 0, 512);
	h->size = sizeof(*h);
	h->pool_size = 0;
	EXPECT_ERRNO(EINVAL, fd, KDBUS_CMD_HELLO, h, "HELLO with pool size 0");
	h->pool_size = 4097;
	EXPECT_ERRNO(EINVAL, fd, KDBUS_CMD_HELLO, h, "HELLO with pool size 4097");
	h->pool_size = POOL_SIZE;
	h->attach_flags_recv = 1ULL << 40;
	EXPECT_ERRNO(EINVAL, fd, KDBUS_CMD_HELLO, h, "HELLO with unknown attach flags");
	h->attach_flags_recv = 0;
	h->flags = KDBUS_HELLO_MONITOR | KDBUS_HELLO_ACTIVATOR;
	EXPECT_ERRNO(EINVAL, fd, KDBUS_CMD_HELLO, h, "HELLO as monitor and activator");
	h->flags = 0;
	{
		struct kdbus_item *it = (void *)((uint8_t *)h + sizeof(*h));
		it->type = KDBUS_ITEM_NAME;
		it->size = KDBUS_ITEM_HEADER_SIZE + 8;
		memcpy(it->str, "foo.bar", 8);
		h->size = sizeof(*h) + KDBUS_ALIGN8(it->size);
		EXPECT_ERRNO(EINVAL, fd, KDBUS_CMD_HELLO, h, "HELLO of an ordinary connection with NAME");
		it->type = KDBUS_ITEM_BLOOM_MASK;
		EXPECT_ERRNO(EINVAL, fd, KDBUS_CMD_HELLO, h, "HELLO with an item it does not take");
		h->size = sizeof(*h);
	}
	EXPECT_ERRNO(ENOTTY, fd, _IOWR(0x95, 0x7f, struct kdbus_cmd), buf, "unknown ioctl number");
	EXPECT_ERRNO(EBADFD, fd, KDBUS_CMD_BYEBYE, buf, "BYEBYE before HELLO");
	h->flags = KDBUS_FLAG_NEGOTIATE;
	CHECK(ioctl(fd, KDBUS_CMD_HELLO, h) == 0 && h->flags == 0xf, "HELLO negotiation -> 0xf");
	OK("HELLO negotiation answers 0xf");
	h->flags = 0;
	CHECK(ioctl(fd, KDBUS_CMD_HELLO, h) == 0, "HELLO after all the misuse");
	OK("HELLO still works, id %llu", (unsigned long long)h->id);
	EXPECT_ERRNO(EBADFD, fd, KDBUS_CMD_HELLO, h, "second HELLO on one handle");
	EXPECT_ERRNO(EFAULT, fd, KDBUS_CMD_CONN_INFO, info_edge, "CONN_INFO struct reaching an unmapped page");
	EXPECT_ERRNO(EFAULT, fd, KDBUS_CMD_CONN_INFO, (void *)8, "CONN_INFO at an unmapped address");
	{
		struct kdbus_cmd_info info = { .size = sizeof(info), .id = 0 };
		EXPECT_ERRNO(EINVAL, fd, KDBUS_CMD_CONN_INFO, &info, "CONN_INFO of id 0");
		info.id = 999999;
		EXPECT_ERRNO(ENXIO, fd, KDBUS_CMD_CONN_INFO, &info, "CONN_INFO of an unknown id");
		info.id = h->id;
		info.attach_flags = 1ULL << 50;
		EXPECT_ERRNO(EINVAL, fd, KDBUS_CMD_CONN_INFO, &info, "CONN_INFO with bad attach flags");
	}
	EXPECT_ERRNO(ENXIO, fd, KDBUS_CMD_FREE, (&(struct kdbus_cmd_free){ .size = 32, .offset = 8 }),
		     "FREE of an offset never handed out");
	CHECK(free_slice(fd, POOL_SIZE) == 0, "FREE of the pool size is a no-op");
	close(fd);
	close(owner);
	printf("hostile: all checks passed\n");
	return 0;
}
