/* Per-mount limits: how many buses one user may make, how many connections, how large a pool.
 * usage: limits MOUNT_ROOT buses|connections|pool SIZE   -> prints "N" (how many succeeded) or
 *        "pool SIZE errno E" (0 = accepted)              and the errno that stopped it */
#include "util.h"

int main(int argc, char **argv)
{
	CHECK(argc >= 3, "usage: limits MOUNT_ROOT buses|connections|pool [SIZE]");
	const char *root = argv[1], *what = argv[2];
	char bus[64], suffix[32];
	int n = 0;

	if (strcmp(what, "buses") == 0) {
		for (;; n++) {
			uint64_t buf[64];
			char path[4096];
			snprintf(bus, sizeof(bus), "%u-limit%d-%d", geteuid(), getpid(), n);
			snprintf(path, sizeof(path), "%s/control", root);
			int fd = open(path, O_RDWR | O_CLOEXEC);
			CHECK(fd >= 0, "open control");
			if (ioctl(fd, KDBUS_CMD_BUS_MAKE, make_bus_cmd(buf, bus, 0)) < 0)
				break; /* the fds stay open: the buses live until exit */
		}
		printf("%d %d\n", n, errno);
		return 0;
	}
	snprintf(suffix, sizeof(suffix), "limit%d", getpid());
	int control = make_bus(root, suffix, bus, sizeof(bus));
	if (strcmp(what, "connections") == 0) {
		for (;; n++) {
			int fd = open_bus(root, bus);
			CHECK(fd >= 0, "open bus");
			struct kdbus_cmd_hello h = { .size = sizeof(h), .pool_size = 4096 };
			if (ioctl(fd, KDBUS_CMD_HELLO, &h) < 0)
				break;
		}
		printf("%d %d\n", n, errno);
	} else {
		CHECK(argc == 4, "pool needs a size");
		int fd = open_bus(root, bus);
		struct kdbus_cmd_hello h = { .size = sizeof(h), .pool_size = strtoull(argv[3], NULL, 0) };
		int r = ioctl(fd, KDBUS_CMD_HELLO, &h);
		printf("pool %s errno %d\n", argv[3], r < 0 ? errno : 0);
	}
	close(control);
	return 0;
}
