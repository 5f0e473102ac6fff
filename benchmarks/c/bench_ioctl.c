/* ioctl round trips through a FUSE mount, timed inside the client.
 * usage: bench_ioctl MODE PATH SECONDS
 *   free   PATH = mount root: make a bus, HELLO, then FREE of an offset never handed out (ENXIO)
 *   noop   PATH = mount root: make a bus, HELLO, then FREE of the pool size (a successful no-op)
 *   hello  PATH = mount root: make a bus, then open + HELLO + BYEBYE + close per iteration
 *   raw    PATH = a file on the raw FUSE responder: the same FREE ioctl, answered with 0
 * Prints "MODE OPS_PER_SECOND". */
#define _GNU_SOURCE
#include <time.h>

#include "bench_common.h"
#include "kdbus_client.h"

#define POOL (1024 * 1024)

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
		control = make_bus(path, "bench", bus, sizeof(bus));
		fd = strcmp(mode, "hello") ? connect_bus(path, bus, POOL, 0).fd : -1;
	}
	struct kdbus_cmd_free cmd = { .size = sizeof(cmd), .offset = 8 };
	if (strcmp(mode, "noop") == 0)
		cmd.offset = POOL;
	start = bench_now();
	end = start + seconds;
	do {
		for (int i = 0; i < 100; i++, n++) {
			if (strcmp(mode, "hello") == 0) {
				int c = connect_bus(path, bus, POOL, 0).fd;
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
	} while (bench_now() < end);
	printf("%s %.0f\n", mode, n / (bench_now() - start));
	if (control >= 0)
		close(control);
	return 0;
}
