/* What the fd-passing benchmarks share: the descriptor each call carries, and what the callee
 * does with the one it receives. */
#ifndef BENCH_FDPASS_COMMON_H
#define BENCH_FDPASS_COMMON_H

#include "bench_common.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

/* KIND "fd": a pipe's read end; "memfd": a sealed memfd of `size` bytes (its pattern written once). */
static inline int bench_descriptor(const char *kind, size_t size)
{
	if (strcmp(kind, "fd") == 0) {
		int p[2];
		if (pipe2(p, O_CLOEXEC) < 0)
			exit(1);
		return p[0];
	}
	int fd = memfd_create("bench", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0 || ftruncate(fd, size) < 0)
		exit(1);
	uint8_t *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		exit(1);
	for (size_t i = 0; i < size; i += 4096)
		p[i] = (uint8_t)i;
	munmap(p, size);
	if (fcntl(fd, F_ADD_SEALS, F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE) < 0)
		exit(1);
	return fd;
}

/* The callee reads a received memfd (a byte per page, as the payload benchmarks do) and closes
 * what it got; -1 (a descriptor that could not be installed) costs nothing. */
static inline unsigned bench_consume(int fd, size_t size)
{
	unsigned sum = 0;
	if (fd < 0)
		return 0;
	if (size) {
		const uint8_t *p = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
		if (p == MAP_FAILED)
			exit(1);
		sum = touch(p, size);
		munmap((void *)p, size);
	}
	close(fd);
	return sum;
}

#endif
