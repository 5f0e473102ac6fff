/* Baseline: a call/reply ping-pong over an AF_UNIX stream socketpair between two processes.
 * The caller writes a length-prefixed payload, the callee reads it all and answers 8 bytes.
 * usage: bench_unix PAYLOAD_BYTES SECONDS   -> "unix PAYLOAD CALLS_PER_SECOND" */
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench_common.h"

static void io(int fd, void *buf, size_t len, int writing)
{
	uint8_t *p = buf;
	while (len) {
		ssize_t n = writing ? write(fd, p, len) : read(fd, p, len);
		if (n <= 0) {
			perror("io");
			exit(1);
		}
		p += n;
		len -= n;
	}
}

int main(int argc, char **argv)
{
	size_t payload = strtoull(argv[1], NULL, 0);
	double seconds = atof(argv[2]);
	int sv[2];
	uint8_t *buf = calloc(1, payload + 8);
	uint64_t len, answer = 0;

	socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
	if (fork() == 0) {
		close(sv[0]);
		for (;;) {
			io(sv[1], &len, 8, 0);
			if (len == ~0ULL)
				_exit(0);
			io(sv[1], buf, len, 0);
			answer = touch(buf, len);
			io(sv[1], &answer, 8, 1);
		}
	}
	close(sv[1]);
	long n = 0;
	double start = bench_now(), end = start + seconds;
	do {
		for (int i = 0; i < 20; i++, n++) {
			len = payload;
			io(sv[0], &len, 8, 1);
			io(sv[0], buf, payload, 1);
			io(sv[0], &answer, 8, 0);
		}
	} while (bench_now() < end);
	report("unix", payload, n, bench_now() - start);
	len = ~0ULL;
	io(sv[0], &len, 8, 1);
	wait(NULL);
	return 0;
}
