/* Broadcast benchmark plumbing shared by the kdbusfs and dbus-daemon versions: N subscriber
 * processes, a sender that keeps at most `window` signals in flight per subscriber (each subscriber
 * acknowledges every window/2 signals over a pipe), and the deliveries per second at the end.
 * The window holds at most about 1 MiB per subscriber, well inside kdbus's per-sender share of a
 * 16 MiB pool, so neither bus has a reason to drop anything. */
#ifndef BENCH_SIGNAL_COMMON_H
#define BENCH_SIGNAL_COMMON_H

#include <sys/wait.h>
#include <unistd.h>

#include "bench_common.h"

#define MAX_SUBS 64

struct plumbing {
	int n;
	long window;
	int ready[2];
	int acks[MAX_SUBS][2];
};

static inline void plumbing_init(struct plumbing *p, int n, size_t payload)
{
	p->n = n;
	p->window = (1 << 20) / (payload + 256);
	if (p->window > 64)
		p->window = 64;
	p->window &= ~1L;
	if (p->window < 2)
		p->window = 2;
	if (pipe(p->ready) < 0)
		exit(1);
	for (int i = 0; i < n; i++)
		if (pipe(p->acks[i]) < 0)
			exit(1);
}

/* In a subscriber: say it is ready; then ack after each half window. */
static inline void subscriber_ready(struct plumbing *p)
{
	if (write(p->ready[1], "r", 1) != 1)
		_exit(1);
}

static inline void subscriber_ack(struct plumbing *p, int me)
{
	if (write(p->acks[me][1], "a", 1) != 1)
		_exit(1);
}

/* In a subscriber: whether `got` signals call for an acknowledgement. */
static inline int subscriber_due(struct plumbing *p, long got)
{
	return got % (p->window / 2) == 0;
}

/* In the sender: wait for all subscribers to be ready (a dead one ends the benchmark). */
static inline void sender_wait_ready(struct plumbing *p)
{
	char c;
	close(p->ready[1]);
	for (int i = 0; i < p->n; i++)
		close(p->acks[i][1]);
	for (int i = 0; i < p->n; i++)
		if (read(p->ready[0], &c, 1) != 1)
			exit(1);
}

/* Before sending signal number `sent` (0-based): wait until every subscriber is within the window. */
static inline void sender_pace(struct plumbing *p, long sent, long *acked)
{
	char c;
	while (sent - *acked >= p->window) {
		for (int i = 0; i < p->n; i++)
			if (read(p->acks[i][0], &c, 1) != 1) {
				fprintf(stderr, "a subscriber died\n");
				exit(1);
			}
		*acked += p->window / 2;
	}
}

static inline void sender_finish(struct plumbing *p, const char *what, size_t payload, long count, double start)
{
	for (int i = 0; i < p->n; i++)
		wait(NULL);
	double seconds = bench_now() - start;
	printf("%s %d %zu %.1f\n", what, p->n, payload, count * p->n / seconds);
}

#endif
