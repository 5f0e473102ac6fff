/* ioctl round trips through a FUSE mount, timed inside the client.
 * usage: bench_ioctl MODE PATH SECONDS
 *   free   PATH = mount root: make a bus, HELLO, then FREE of an offset never handed out (ENXIO)
 *   noop   PATH = mount root: make a bus, HELLO, then FREE of the pool size (a successful no-op)
 *   hello  PATH = mount root: make a bus, then open + HELLO + BYEBYE + close per iteration
 *   raw    PATH = a file on the raw FUSE responder: the same FREE ioctl, answered with 0
 * Prints "MODE OPS_PER_SECOND". */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "kdbus.h"

#define POOL (1024 * 1024)

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int make_bus(const char *root, char *bus, size_t len)
{
	uint64_t buf[64] = {0};
	struct kdbus_cmd *cmd = (void *)buf;
	struct kdbus_item *it = cmd->items;
	char path[4096];

	snprintf(bus, len, "%u-bench%d", geteuid(), getpid());
	it->type = KDBUS_ITEM_BLOOM_PARAMETER;
	it->size = KDBUS_ITEM_HEADER_SIZE + sizeof(struct kdbus_bloom_parameter);
	it->bloom_parameter.size = 64;
	it->bloom_parameter.n_hash = 1;
	it = KDBUS_ITEM_NEXT(it);
	it->type = KDBUS_ITEM_MAKE_NAME;
	it->size = KDBUS_ITEM_HEADER_SIZE + strlen(bus) + 1;
	strcpy(it->str, bus);
	it = KDBUS_ITEM_NEXT(it);
	cmd->size = (uint8_t *)it - (uint8_t *)cmd;
	snprintf(path, sizeof(path), "%s/control", root);
	int fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0 || ioctl(fd, KDBUS_CMD_BUS_MAKE, cmd) < 0) {
		perror("BUS_MAKE");
		exit(1);
	}
	return fd;
}

static int connect_bus(const char *root, const char *bus)
{
	char path[4096];
	struct kdbus_cmd_hello hello = { .size = sizeof(hello), .pool_size = POOL };
	snprintf(path, sizeof(path), "%s/%s/bus", root, bus);
	int fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0 || ioctl(fd, KDBUS_CMD_HELLO, &hello) < 0) {
		perror("HELLO");
		exit(1);
	}
	return fd;
}

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: bench_ioctl free|noop|hello|raw PATH SECONDS\n");
		return 2;
	}
	const char *mode = argv[1], *path = argv[2];
	double seconds = atof(argv[3]), start, end;
	char bus[64];
	long n = 0;
	int fd, control = -1;

	if (strcmp(mode, "raw") == 0) {
		fd = open(path, O_RDWR | O_CLOEXEC);
		if (fd < 0) { perror(path); return 1; }
	} else {
		control = make_bus(path, bus, sizeof(bus));
		fd = strcmp(mode, "hello") ? connect_bus(path, bus) : -1;
	}
	struct kdbus_cmd_free cmd = { .size = sizeof(cmd), .offset = 8 };
	if (strcmp(mode, "noop") == 0)
		cmd.offset = POOL;
	start = now();
	end = start + seconds;
	do {
		for (int i = 0; i < 100; i++, n++) {
			if (strcmp(mode, "hello") == 0) {
				int c = connect_bus(path, bus);
				struct kdbus_cmd bye = { .size = sizeof(bye) };
				if (ioctl(c, KDBUS_CMD_BYEBYE, &bye) < 0) { perror("BYEBYE"); return 1; }
				close(c);
				continue;
			}
			int r = ioctl(fd, KDBUS_CMD_FREE, &cmd);
			if (strcmp(mode, "free") == 0 ? (r == 0 || errno != ENXIO) : r != 0) {
				perror("FREE");
				return 1;
			}
		}
	} while (now() < end);
	printf("%s %.0f\n", mode, n / (now() - start));
	if (control >= 0)
		close(control);
	return 0;
}
