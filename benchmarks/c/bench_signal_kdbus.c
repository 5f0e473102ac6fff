/* Broadcast deliveries per second through kdbusfs: one sender, N subscribers whose bloom mask
 * selects the sender's signals.   usage: bench_signal_kdbus MOUNT_ROOT N PAYLOAD COUNT
 * -> "kdbusfs N PAYLOAD DELIVERIES_PER_SECOND" */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#include "bench_signal_common.h"
#include "kdbus.h"

#define POOL (16 * 1024 * 1024)
#define BLOOM 64

static int connect_bus(const char *root, const char *bus, uint8_t **pool)
{
	char path[4096];
	struct kdbus_cmd_hello hello = { .size = sizeof(hello), .pool_size = POOL };
	snprintf(path, sizeof(path), "%s/%s/bus", root, bus);
	int fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0 || ioctl(fd, KDBUS_CMD_HELLO, &hello) < 0) {
		perror("HELLO");
		exit(1);
	}
	*pool = mmap(NULL, POOL, PROT_READ, MAP_SHARED, fd, 0);
	struct kdbus_cmd_free f = { .size = sizeof(f), .offset = hello.offset };
	ioctl(fd, KDBUS_CMD_FREE, &f);
	return fd;
}

int main(int argc, char **argv)
{
	const char *root = argv[1];
	int n = atoi(argv[2]);
	size_t payload = strtoull(argv[3], NULL, 0);
	long count = atol(argv[4]);
	char bus[64], path[4096];
	uint64_t cmdbuf[64] = {0};
	struct plumbing p;

	/* Bus with a 64-byte bloom. */
	struct kdbus_cmd *make = (void *)cmdbuf;
	struct kdbus_item *it = make->items;
	snprintf(bus, sizeof(bus), "%u-sigbench%d", geteuid(), getpid());
	it->type = KDBUS_ITEM_BLOOM_PARAMETER;
	it->size = KDBUS_ITEM_HEADER_SIZE + sizeof(struct kdbus_bloom_parameter);
	it->bloom_parameter.size = BLOOM;
	it->bloom_parameter.n_hash = 1;
	it = KDBUS_ITEM_NEXT(it);
	it->type = KDBUS_ITEM_MAKE_NAME;
	it->size = KDBUS_ITEM_HEADER_SIZE + strlen(bus) + 1;
	strcpy(it->str, bus);
	it = KDBUS_ITEM_NEXT(it);
	make->size = (uint8_t *)it - (uint8_t *)make;
	snprintf(path, sizeof(path), "%s/control", root);
	int control = open(path, O_RDWR | O_CLOEXEC);
	if (control < 0 || ioctl(control, KDBUS_CMD_BUS_MAKE, make) < 0) {
		perror("BUS_MAKE");
		return 1;
	}

	plumbing_init(&p, n, payload);
	for (int i = 0; i < n; i++) {
		if (fork() != 0)
			continue;
		uint8_t *pool;
		int fd = connect_bus(root, bus, &pool);
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
	uint8_t *pool;
	int fd = connect_bus(root, bus, &pool);
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
		it = KDBUS_ITEM_NEXT(it);
		it->type = KDBUS_ITEM_PAYLOAD_VEC;
		it->size = KDBUS_ITEM_HEADER_SIZE + sizeof(struct kdbus_vec);
		it->vec.address = (uintptr_t)data;
		it->vec.size = payload;
		it = KDBUS_ITEM_NEXT(it);
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
