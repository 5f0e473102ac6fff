/* Message helpers for the end-to-end C clients. */
#ifndef KDBUSFS_TEST_MSGUTIL_H
#define KDBUSFS_TEST_MSGUTIL_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <poll.h>
#include <stdbool.h>
#include <time.h>

#include "util.h"

static inline uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + ts.tv_nsec;
}

/* A message in `buf` (8-aligned, >= 4 KiB): header, optional DST_NAME, one data vec. */
static inline struct kdbus_msg *build_msg(void *buf, uint64_t dst, const char *dst_name,
					  const void *data, size_t len, uint64_t flags, uint64_t cookie)
{
	struct kdbus_msg *m = buf;
	struct kdbus_item *it;

	memset(buf, 0, 4096);
	m->flags = flags;
	m->dst_id = dst;
	m->payload_type = KDBUS_PAYLOAD_DBUS;
	m->cookie = cookie;
	it = m->items;
	if (dst_name) {
		it->type = KDBUS_ITEM_DST_NAME;
		it->size = KDBUS_ITEM_HEADER_SIZE + strlen(dst_name) + 1;
		strcpy(it->str, dst_name);
		it = KDBUS_ITEM_NEXT(it);
	}
	if (len) {
		it->type = KDBUS_ITEM_PAYLOAD_VEC;
		it->size = KDBUS_ITEM_HEADER_SIZE + sizeof(struct kdbus_vec);
		it->vec.address = (uintptr_t)data;
		it->vec.size = len;
		it = KDBUS_ITEM_NEXT(it);
	}
	m->size = (uint8_t *)it - (uint8_t *)m;
	return m;
}

static inline int send_msg(int fd, struct kdbus_msg *m, uint64_t flags, struct kdbus_cmd_send *out)
{
	struct kdbus_cmd_send cmd = { .size = sizeof(cmd), .flags = flags, .msg_address = (uintptr_t)m };
	int r = ioctl(fd, KDBUS_CMD_SEND, &cmd);
	if (out)
		*out = cmd;
	return r;
}

static inline int recv_msg(struct conn *c, struct kdbus_cmd_recv *recv, uint64_t flags, int64_t prio)
{
	memset(recv, 0, sizeof(*recv));
	recv->size = sizeof(*recv);
	recv->flags = flags;
	recv->priority = prio;
	return ioctl(c->fd, KDBUS_CMD_RECV, recv);
}

/* The first PAYLOAD_OFF's bytes of a received message, or NULL. */
static inline const uint8_t *payload_of(const struct kdbus_msg *m, uint64_t *len)
{
	const struct kdbus_item *it;
	KDBUS_FOREACH(it, m->items, m->size - offsetof(struct kdbus_msg, items))
		if (it->type == KDBUS_ITEM_PAYLOAD_OFF && it->vec.offset != ~0ULL) {
			*len = it->vec.size;
			return (const uint8_t *)m + it->vec.offset;
		}
	return NULL;
}

static inline const struct kdbus_item *find_item(const struct kdbus_msg *m, uint64_t type)
{
	const struct kdbus_item *it;
	KDBUS_FOREACH(it, m->items, m->size - offsetof(struct kdbus_msg, items))
		if (it->type == type)
			return it;
	return NULL;
}

static inline int name_cmd(int fd, unsigned long cmd, const char *name, uint64_t flags, uint64_t *ret)
{
	uint64_t buf[64] = {0};
	struct kdbus_cmd *c = (void *)buf;
	struct kdbus_item *it = c->items;
	it->type = KDBUS_ITEM_NAME;
	it->size = KDBUS_ITEM_HEADER_SIZE + strlen(name) + 1;
	strcpy(it->str, name);
	c->size = sizeof(*c) + KDBUS_ALIGN8(it->size);
	c->flags = flags;
	int r = ioctl(fd, cmd, c);
	if (ret)
		*ret = c->return_flags;
	return r;
}

/* RECV the next message into `recv`, waiting up to `ms` for one to come; false if none came. */
static inline bool recv_within(struct conn *c, struct kdbus_cmd_recv *recv, int ms)
{
	struct pollfd p = { .fd = c->fd, .events = POLLIN };

	while (recv_msg(c, recv, 0, 0) < 0) {
		CHECK(errno == EAGAIN, "RECV");
		if (poll(&p, 1, ms) <= 0)
			return false;
	}
	return true;
}

/* Bytes from the hex a test writes on a peer's stdin; -1 if they do not fit `max` or are not hex. */
static inline int unhex(const char *hex, uint8_t *out, size_t max)
{
	size_t n = strlen(hex) / 2;
	if (n > max)
		return -1;
	for (size_t i = 0; i < n; i++) {
		unsigned v;
		if (sscanf(hex + 2 * i, "%2x", &v) != 1)
			return -1;
		out[i] = (uint8_t)v;
	}
	return (int)n;
}

#endif
