/* The foundation flow: make a bus, connect twice, map pools, query, misuse, say goodbye, tear down.
 * usage: foundation MOUNT_ROOT */
#include <poll.h>
#include <sys/stat.h>

#include "util.h"

int main(int argc, char **argv)
{
	const char *root = argc > 1 ? argv[1] : "/sys/fs/kdbus";
	char bus[64], suffix[32], dir[4096];
	struct conn a, b;
	struct stat st;
	int control;

	snprintf(suffix, sizeof(suffix), "foundation%d", getpid());
	control = make_bus(root, suffix, bus, sizeof(bus));
	OK("BUS_MAKE %s", bus);

	snprintf(dir, sizeof(dir), "%s/%s", root, bus);
	CHECK(stat(dir, &st) == 0 && S_ISDIR(st.st_mode), "bus directory %s", dir);
	CHECK(st.st_uid == geteuid(), "bus directory owned by %u, not %u", st.st_uid, geteuid());
	CHECK((st.st_mode & 0777) == 0500, "bus directory mode %o", st.st_mode & 0777);
	OK("bus directory exists with mode 0500");

	hello(&a, root, bus, KDBUS_HELLO_ACCEPT_FD);
	hello(&b, root, bus, 0);
	CHECK(a.id > 0 && b.id > 0 && a.id != b.id, "distinct ids %llu %llu",
	      (unsigned long long)a.id, (unsigned long long)b.id);
	OK("two connections, ids %llu and %llu", (unsigned long long)a.id, (unsigned long long)b.id);
	CHECK(memcmp(a.hello.id128, b.hello.id128, 16) == 0, "same bus id128");

	/* HELLO publishes the bloom parameters in the pool. */
	struct kdbus_item *bloom = item_at(a.pool, a.hello.offset);
	CHECK(a.hello.items_size >= 32 && bloom->type == KDBUS_ITEM_BLOOM_PARAMETER &&
	      bloom->bloom_parameter.size == 64 && bloom->bloom_parameter.n_hash == 1,
	      "bloom parameter item in the pool (type %llu size %llu)",
	      (unsigned long long)bloom->type, (unsigned long long)bloom->bloom_parameter.size);
	CHECK(free_slice(a.fd, a.hello.offset) == 0, "FREE hello slice");
	CHECK(free_slice(b.fd, b.hello.offset) == 0, "FREE hello slice b");
	OK("pools mapped, bloom parameters read and freed");
	errno = 0;
	CHECK(free_slice(a.fd, a.hello.offset) < 0 && errno == ENXIO, "double FREE gives ENXIO");
	OK("double FREE -> ENXIO");

	/* BUS_CREATOR_INFO names the bus. */
	struct kdbus_cmd_info info = { .size = sizeof(info) };
	CHECK(ioctl(b.fd, KDBUS_CMD_BUS_CREATOR_INFO, &info) == 0, "BUS_CREATOR_INFO");
	struct kdbus_info *bi = (struct kdbus_info *)(b.pool + info.offset);
	const struct kdbus_item *it;
	int found = 0;
	KDBUS_FOREACH(it, bi->items, bi->size - offsetof(struct kdbus_info, items))
		if (it->type == KDBUS_ITEM_MAKE_NAME && strcmp(it->str, bus) == 0)
			found = 1;
	CHECK(found, "MAKE_NAME %s in BUS_CREATOR_INFO", bus);
	CHECK(free_slice(b.fd, info.offset) == 0, "FREE creator info");
	OK("BUS_CREATOR_INFO names %s", bus);

	/* CONN_INFO of the peer. */
	memset(&info, 0, sizeof(info));
	info.size = sizeof(info);
	info.id = a.id;
	CHECK(ioctl(b.fd, KDBUS_CMD_CONN_INFO, &info) == 0, "CONN_INFO");
	struct kdbus_info *ci = (struct kdbus_info *)(b.pool + info.offset);
	CHECK(ci->id == a.id && ci->flags == KDBUS_HELLO_ACCEPT_FD, "CONN_INFO id/flags");
	CHECK(free_slice(b.fd, info.offset) == 0, "FREE conn info");
	OK("CONN_INFO of %llu", (unsigned long long)a.id);

	/* Misuse of HELLO on a fresh handle. */
	int fd = open_bus(root, bus);
	CHECK(fd >= 0, "open third handle");
	struct { struct kdbus_cmd_hello h; uint64_t pad; } buf;
	memset(&buf, 0, sizeof(buf));
	struct kdbus_cmd_hello *unaligned = (void *)((uint8_t *)&buf + 1);
	EXPECT_ERRNO(EFAULT, fd, KDBUS_CMD_HELLO, unaligned, "unaligned HELLO");
	struct kdbus_cmd_hello bad = { .size = sizeof(bad), .flags = 1ULL << 40, .pool_size = POOL_SIZE };
	EXPECT_ERRNO(EINVAL, fd, KDBUS_CMD_HELLO, &bad, "HELLO with an unknown flag");
	close(fd);

	/* BYEBYE, then the connection is gone. */
	struct kdbus_cmd bye = { .size = sizeof(bye) };
	CHECK(ioctl(a.fd, KDBUS_CMD_BYEBYE, &bye) == 0, "BYEBYE");
	OK("BYEBYE");
	EXPECT_ERRNO(ECONNRESET, a.fd, KDBUS_CMD_BYEBYE, &bye, "second BYEBYE");

	/* Closing the control fd destroys the bus. */
	close(control);
	errno = 0;
	CHECK(stat(dir, &st) < 0 && errno == ENOENT, "bus directory gone after close(control)");
	OK("bus directory vanished with the control fd");
	EXPECT_ERRNO(ECONNRESET, b.fd, KDBUS_CMD_BUS_CREATOR_INFO, &info, "ioctl on a dead bus");
	struct pollfd pfd = { .fd = b.fd, .events = POLLIN };
	CHECK(poll(&pfd, 1, 1000) == 1 && (pfd.revents & (POLLERR | POLLHUP)), "poll says hung up");
	OK("poll -> POLLERR|POLLHUP");
	munmap(a.pool, POOL_SIZE);
	munmap(b.pool, POOL_SIZE);
	close(a.fd);
	close(b.fd);
	printf("foundation: all checks passed\n");
	return 0;
}
