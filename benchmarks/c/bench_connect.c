/* Fresh processes connecting to a bus and staying connected, with the daemon's CPU per connection.
 * usage: bench_connect ROOT DAEMON_PID TOTAL BLOCK
 *   Makes a bus under the mount ROOT, then forks TOTAL children one after another. Each child
 *   opens ROOT/<bus>/bus (LOOKUP + OPEN) and sends HELLO, tells the parent, and stays connected
 *   until the parent is done. The next child is forked only once the previous one is connected.
 * Prints one line per block of BLOCK connections:
 *   "block FIRST LAST DAEMON_CPU_NS WALL_NS"
 * where DAEMON_CPU_NS is the CPU time (user + system, all threads) the daemon DAEMON_PID spent
 * while that block connected, from /proc/DAEMON_PID/task/x/schedstat (nanosecond resolution). */
#define _GNU_SOURCE
#include <dirent.h>
#include <signal.h>
#include <sys/wait.h>

#include "bench_common.h"
#include "kdbus_client.h"

#define POOL (1024 * 1024)

/* CPU time of every thread of `pid` so far, in ns. */
static uint64_t daemon_cpu_ns(int pid)
{
	char path[128];
	uint64_t total = 0;
	snprintf(path, sizeof(path), "/proc/%d/task", pid);
	DIR *dir = opendir(path);
	if (!dir)
		die("opendir /proc/PID/task");
	struct dirent *entry;
	while ((entry = readdir(dir)) != NULL) {
		if (entry->d_name[0] == '.')
			continue;
		char stat_path[300];
		snprintf(stat_path, sizeof(stat_path), "%s/%s/schedstat", path, entry->d_name);
		FILE *f = fopen(stat_path, "r");
		if (!f)
			continue; /* a thread that just ended */
		unsigned long long on_cpu = 0;
		if (fscanf(f, "%llu", &on_cpu) == 1)
			total += on_cpu;
		fclose(f);
	}
	closedir(dir);
	return total;
}

/* The child: open + HELLO, report, then wait (connected) until the parent closes `hold`. */
static void client(const char *root, const char *bus, int ack, int hold)
{
	char path[4096];
	struct kdbus_cmd_hello hello = { .size = sizeof(hello), .pool_size = POOL };
	char answer = 'K';
	snprintf(path, sizeof(path), "%s/%s/bus", root, bus);
	int fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0 || ioctl(fd, KDBUS_CMD_HELLO, &hello) < 0) {
		perror("HELLO");
		answer = 'E';
	}
	if (write(ack, &answer, 1) != 1)
		_exit(1);
	while (read(hold, &answer, 1) > 0)
		;
	_exit(0);
}

int main(int argc, char **argv)
{
	if (argc != 5) {
		fprintf(stderr, "usage: bench_connect ROOT DAEMON_PID TOTAL BLOCK\n");
		return 2;
	}
	const char *root = argv[1];
	int daemon = atoi(argv[2]);
	long total = atol(argv[3]), block = atol(argv[4]);
	char bus[64];
	int ack[2], hold[2];

	int control = make_bus(root, "connect", bus, sizeof(bus));
	if (pipe2(ack, O_CLOEXEC) < 0 || pipe2(hold, O_CLOEXEC) < 0)
		die("pipe");
	pid_t *children = calloc(total, sizeof(*children));
	uint64_t cpu_start = daemon_cpu_ns(daemon), wall_start = bench_now_ns();
	for (long i = 0; i < total; i++) {
		pid_t pid = fork();
		if (pid < 0)
			die("fork");
		if (pid == 0) {
			close(ack[0]);
			close(hold[1]);
			client(root, bus, ack[1], hold[0]);
		}
		children[i] = pid;
		char answer;
		if (read(ack[0], &answer, 1) != 1 || answer != 'K') {
			fprintf(stderr, "client %ld failed to connect\n", i);
			for (long j = 0; j <= i; j++)
				kill(children[j], SIGKILL);
			return 1;
		}
		if ((i + 1) % block == 0 || i + 1 == total) {
			uint64_t cpu = daemon_cpu_ns(daemon), wall = bench_now_ns();
			printf("block %ld %ld %llu %llu\n", i - i % block + 1, i + 1,
			       (unsigned long long)(cpu - cpu_start), (unsigned long long)(wall - wall_start));
			fflush(stdout);
			cpu_start = cpu;
			wall_start = wall;
		}
	}
	/* Everyone leaves: the children see EOF on `hold` and exit. */
	close(hold[1]);
	for (long i = 0; i < total; i++)
		waitpid(children[i], NULL, 0);
	close(control);
	return 0;
}
