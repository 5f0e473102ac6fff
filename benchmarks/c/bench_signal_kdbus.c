/* Broadcast deliveries per second through kdbusfs: one sender, N subscribers whose bloom mask
 * selects the sender's signals.   usage: bench_signal_kdbus MOUNT_ROOT N PAYLOAD COUNT
 * -> "kdbusfs N PAYLOAD DELIVERIES_PER_SECOND" */
#include <poll.h>

#include "bench_signal_common.h"
#include "kdbus_client.h"

#define POOL (16 * 1024 * 1024)
#define BLOOM BENCH_BLOOM

int main(int argc, char **argv)
{
	const char *root = argv[1];
	int n = atoi(argv[2]);
	size_t payload = strtoull(argv[3], NULL, 0);
	long count = atol(argv[4]);
	char bus[64];
	struct kdbus_item *it;
	struct plumbing p;

	int control = make_bus(root, "sigbench", bus, sizeof(bus));
	plumbing_init(&p, n, payload);
	for (int i = 0; i < n; i++) {
		if (fork() != 0)
			continue;
		struct conn sub = connect_bus(root, bus, POOL, 1);
		int fd = sub.fd;
		uint8_t *pool = sub.pool;
		uint64_t mbuf[64] = {0};
		struct kdbus_cmd_match *match = (void *)mbuf;
		struct kdbus_item *rule = (void *)((uint8_t *)match + sizeof(*match));
		rule->type = KDBUS_ITEM_BLOOM_MASK;
		rule->size = KDBUS_ITEM_HEADER_SIZE + BLOOM;
		((uint8_t *)rule)[KDBUS_ITEM_HEADER_SIZE] = 0x01;
		match->size = sizeof(*match) + rule->size;
		if (ioctl(fd, KDBUS_CMD_MATCH_ADD, match) < 0) {
			perror("MATCH_ADD");
			_exit(1);
		}
		subscriber_ready(&p);
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		for (long got = 0; got < count;) {
			struct kdbus_cmd_recv recv = { .size = sizeof(recv) };
			if (ioctl(fd, KDBUS_CMD_RECV, &recv) < 0) {
				if (errno != EAGAIN) {
					perror("RECV");
					_exit(1);
				}
				poll(&pfd, 1, -1);
				continue;
			}
			if (recv.dropped_msgs) {
				fprintf(stderr, "subscriber lost %llu\n", (unsigned long long)recv.dropped_msgs);
				_exit(1);
			}
			struct kdbus_msg *m = (void *)(pool + recv.msg.offset);
			struct kdbus_item *item;
			KDBUS_FOREACH(item, m->items, m->size - offsetof(struct kdbus_msg, items))
				if (item->type == KDBUS_ITEM_PAYLOAD_OFF && item->vec.offset != ~0ULL)
					touch((uint8_t *)m + item->vec.offset, item->vec.size);
			struct kdbus_cmd_free f = { .size = sizeof(f), .offset = recv.msg.offset };
			ioctl(fd, KDBUS_CMD_FREE, &f);
			if (subscriber_due(&p, ++got))
				subscriber_ack(&p, i);
		}
		_exit(0);
	}
	int fd = connect_bus(root, bus, POOL, 0).fd;
	sender_wait_ready(&p);
	uint8_t *data = calloc(1, payload + 8);
	uint64_t msgbuf[64];
	struct kdbus_msg *m = (void *)msgbuf;
	long acked = 0;
	double start = bench_now();
	for (long sent = 0; sent < count; sent++) {
		sender_pace(&p, sent, &acked);
		memset(msgbuf, 0, sizeof(msgbuf));
		m->flags = KDBUS_MSG_SIGNAL;
		m->dst_id = KDBUS_DST_ID_BROADCAST;
		m->payload_type = KDBUS_PAYLOAD_DBUS;
		m->cookie = sent + 1;
		it = m->items;
		it->type = KDBUS_ITEM_BLOOM_FILTER;
		it->size = KDBUS_ITEM_HEADER_SIZE + 8 + BLOOM;
		((uint8_t *)it)[KDBUS_ITEM_HEADER_SIZE + 8] = 0x01;
		it = put_vec(KDBUS_ITEM_NEXT(it), data, payload);
		m->size = (uint8_t *)it - (uint8_t *)m;
		struct kdbus_cmd_send send = { .size = sizeof(send), .msg_address = (uintptr_t)m };
		if (ioctl(fd, KDBUS_CMD_SEND, &send) < 0) {
			perror("SEND");
			return 1;
		}
	}
	sender_finish(&p, "kdbusfs", payload, count, start);
	close(control);
	return 0;
}
