/* Broadcast benchmark plumbing shared by the kdbusfs and dbus-daemon versions: N subscriber
 * processes, a sender that keeps at most WINDOW signals in flight per subscriber (each subscriber
 * acknowledges every WINDOW/2 signals over a pipe), and the deliveries per second at the end. */
#ifndef BENCH_SIGNAL_COMMON_H
#define BENCH_SIGNAL_COMMON_H

#include <sys/wait.h>
#include <unistd.h>

#include "bench_common.h"

#define WINDOW 64
#define MAX_SUBS 64

struct plumbing {
	int n;
	int ready[2];
	int acks[MAX_SUBS][2];
};

static inline void plumbing_init(struct plumbing *p, int n)
{
	p->n = n;
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

/* In the sender: wait for all subscribers to be ready. */
static inline void sender_wait_ready(struct plumbing *p)
{
	char c;
	for (int i = 0; i < p->n; i++)
		if (read(p->ready[0], &c, 1) != 1)
			exit(1);
}

/* Before sending signal number `sent` (0-based): wait until every subscriber is at most WINDOW behind. */
static inline void sender_pace(struct plumbing *p, long sent, long *acked)
{
	char c;
	while (sent - *acked >= WINDOW) {
		for (int i = 0; i < p->n; i++)
			if (read(p->acks[i][0], &c, 1) != 1)
				exit(1);
		*acked += WINDOW / 2;
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
