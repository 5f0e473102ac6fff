/* Shared by the call benchmarks: timing and the payload pattern. */
#ifndef BENCH_COMMON_H
#define BENCH_COMMON_H

#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static inline double bench_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static inline uint64_t bench_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + ts.tv_nsec;
}

/* The callee reads every payload: sum a byte per 4 KiB page plus the last one. */
static inline unsigned touch(const uint8_t *p, size_t len)
{
	unsigned sum = 0;
	for (size_t i = 0; i < len; i += 4096)
		sum += p[i];
	return len ? sum + p[len - 1] : sum;
}

static inline void report(const char *what, size_t payload, long n, double seconds)
{
	printf("%s %zu %.1f\n", what, payload, n / seconds);
}

#endif
