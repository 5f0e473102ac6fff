/* What the kdbusfs benchmark clients share: making a bus, connecting with a mapped pool,
 * appending a payload vec to a message. */
#ifndef BENCH_KDBUS_CLIENT_H
#define BENCH_KDBUS_CLIENT_H

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "kdbus.h"

#define BENCH_BLOOM 64

struct conn {
	int fd;
	uint64_t id;
	uint8_t *pool;
};

static inline void die(const char *what)
{
	perror(what);
	exit(1);
}

/* Create "<euid>-<prefix><pid>" with a 64-byte bloom; returns the control fd that owns it. */
static inline int make_bus(const char *root, const char *prefix, char *bus, size_t len)
{
	uint64_t buf[64] = {0};
	struct kdbus_cmd *cmd = (void *)buf;
	struct kdbus_item *it = cmd->items;
	char path[4096];
	snprintf(bus, len, "%u-%s%d", geteuid(), prefix, getpid());
	it->type = KDBUS_ITEM_BLOOM_PARAMETER;
	it->size = KDBUS_ITEM_HEADER_SIZE + sizeof(struct kdbus_bloom_parameter);
	it->bloom_parameter.size = BENCH_BLOOM;
	it->bloom_parameter.n_hash = 1;
	it = KDBUS_ITEM_NEXT(it);
	it->type = KDBUS_ITEM_MAKE_NAME;
	it->size = KDBUS_ITEM_HEADER_SIZE + strlen(bus) + 1;
	strcpy(it->str, bus);
	it = KDBUS_ITEM_NEXT(it);
	cmd->size = (uint8_t *)it - (uint8_t *)cmd;
	snprintf(path, sizeof(path), "%s/control", root);
	int fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0 || ioctl(fd, KDBUS_CMD_BUS_MAKE, cmd) < 0)
		die("BUS_MAKE");
	return fd;
}

/* What a connection says about itself at HELLO beyond its flags: the metadata it lets others
 * see and wants to see (attach_flags_send/recv), and a CONN_DESCRIPTION (none if NULL). */
struct identity {
	uint64_t attach_send, attach_recv;
	const char *description;
};

/* The metadata kdbus-era sd-bus clients received, allowing every item to be sent (as sd-bus did). */
#define BENCH_METADATA_RECV (KDBUS_ATTACH_TIMESTAMP | KDBUS_ATTACH_CREDS | KDBUS_ATTACH_PIDS | \
			     KDBUS_ATTACH_TID_COMM | KDBUS_ATTACH_PID_COMM | KDBUS_ATTACH_NAMES | \
			     KDBUS_ATTACH_CONN_DESCRIPTION)

/* HELLO with `flags`, `who` and a pool of `pool_size` (mapped unless `map` is 0); the HELLO slice is
 * freed. */
static inline struct conn connect_bus_as(const char *root, const char *bus, uint64_t pool_size, int map,
					 uint64_t flags, struct identity who)
{
	char path[4096];
	struct conn c = { .pool = NULL };
	uint64_t buf[64] = {0};
	struct kdbus_cmd_hello *hello = (void *)buf;
	struct kdbus_item *it = hello->items;
	hello->flags = flags;
	hello->attach_flags_send = who.attach_send;
	hello->attach_flags_recv = who.attach_recv;
	hello->pool_size = pool_size;
	if (who.description) {
		it->type = KDBUS_ITEM_CONN_DESCRIPTION;
		it->size = KDBUS_ITEM_HEADER_SIZE + strlen(who.description) + 1;
		strcpy(it->str, who.description);
		it = KDBUS_ITEM_NEXT(it);
	}
	hello->size = (uint8_t *)it - (uint8_t *)hello;
	snprintf(path, sizeof(path), "%s/%s/bus", root, bus);
	c.fd = open(path, O_RDWR | O_CLOEXEC);
	if (c.fd < 0 || ioctl(c.fd, KDBUS_CMD_HELLO, hello) < 0)
		die("HELLO");
	c.id = hello->id;
	if (map) {
		c.pool = mmap(NULL, pool_size, PROT_READ, MAP_SHARED, c.fd, 0);
		if (c.pool == MAP_FAILED)
			die("mmap");
	}
	struct kdbus_cmd_free f = { .size = sizeof(f), .offset = hello->offset };
	ioctl(c.fd, KDBUS_CMD_FREE, &f);
	return c;
}

static inline struct conn connect_bus_with(const char *root, const char *bus, uint64_t pool_size, int map,
					   uint64_t flags)
{
	return connect_bus_as(root, bus, pool_size, map, flags, (struct identity){ 0, 0, NULL });
}

static inline struct conn connect_bus(const char *root, const char *bus, uint64_t pool_size, int map)
{
	return connect_bus_with(root, bus, pool_size, map, 0);
}

/* Write a PAYLOAD_VEC item at `it`; returns where the next item goes. */
static inline struct kdbus_item *put_vec(struct kdbus_item *it, const void *data, uint64_t len)
{
	it->type = KDBUS_ITEM_PAYLOAD_VEC;
	it->size = KDBUS_ITEM_HEADER_SIZE + sizeof(struct kdbus_vec);
	it->vec.address = (uintptr_t)data;
	it->vec.size = len;
	return KDBUS_ITEM_NEXT(it);
}

#endif
