/* Helpers shared by the end-to-end C clients. Each client prints one line per check and exits
 * non-zero on the first failure, naming the check and the errno it saw. */
#ifndef KDBUSFS_TEST_UTIL_H
#define KDBUSFS_TEST_UTIL_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "kdbus.h"

#define POOL_SIZE (16 * 1024 * 1024)

#define CHECK(cond, ...) do {                                                   \
	if (!(cond)) {                                                          \
		int saved_ = errno;                                             \
		fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);            \
		fprintf(stderr, __VA_ARGS__);                                   \
		fprintf(stderr, " (errno %d: %s)\n", saved_, strerror(saved_)); \
		exit(1);                                                        \
	}                                                               \
} while (0)

#define OK(...) do { printf("ok "); printf(__VA_ARGS__); printf("\n"); fflush(stdout); } while (0)

/* Expect ioctl(fd, cmd, arg) to fail with `want`. */
#define EXPECT_ERRNO(want, fd, cmd, arg, what) do {                              \
	errno = 0;                                                              \
	int r_ = ioctl((fd), (cmd), (arg));                                     \
	CHECK(r_ < 0 && errno == (want), "%s: want errno %d, got ret %d", what, (want), r_); \
	OK("%s -> %s", what, strerror(want));                                   \
} while (0)

static inline struct kdbus_item *item_at(void *base, size_t offset)
{
	return (struct kdbus_item *)((uint8_t *)base + offset);
}

/* Build a BUS_MAKE command for `name` in `buf` (at least 256 bytes, 8-aligned). */
static inline struct kdbus_cmd *make_bus_cmd(void *buf, const char *name, uint64_t flags)
{
	struct kdbus_cmd *cmd = buf;
	struct kdbus_item *it;
	size_t len = strlen(name) + 1;

	memset(buf, 0, 256);
	cmd->flags = flags;
	it = cmd->items;
	it->type = KDBUS_ITEM_BLOOM_PARAMETER;
	it->size = KDBUS_ITEM_HEADER_SIZE + sizeof(struct kdbus_bloom_parameter);
	it->bloom_parameter.size = 64;
	it->bloom_parameter.n_hash = 1;
	it = KDBUS_ITEM_NEXT(it);
	it->type = KDBUS_ITEM_MAKE_NAME;
	it->size = KDBUS_ITEM_HEADER_SIZE + len;
	memcpy(it->str, name, len);
	it = KDBUS_ITEM_NEXT(it);
	cmd->size = (uint8_t *)it - (uint8_t *)cmd;
	return cmd;
}

/* Create a bus named "<euid>-<suffix>"; returns the control fd that owns it. */
static inline int make_bus(const char *root, const char *suffix, char *name_out, size_t name_len)
{
	uint64_t buf[64];
	char path[4096];
	int fd;

	snprintf(name_out, name_len, "%u-%s", geteuid(), suffix);
	snprintf(path, sizeof(path), "%s/control", root);
	fd = open(path, O_RDWR | O_CLOEXEC);
	CHECK(fd >= 0, "open %s", path);
	CHECK(ioctl(fd, KDBUS_CMD_BUS_MAKE, make_bus_cmd(buf, name_out, 0)) == 0, "BUS_MAKE %s", name_out);
	return fd;
}

struct conn {
	int fd;
	uint64_t id;
	uint8_t *pool;
	struct kdbus_cmd_hello hello;
};

static inline int open_bus(const char *root, const char *bus)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/%s/bus", root, bus);
	return open(path, O_RDWR | O_CLOEXEC);
}

/* HELLO on a fresh endpoint fd and map the pool. */
static inline void hello(struct conn *c, const char *root, const char *bus, uint64_t flags)
{
	c->fd = open_bus(root, bus);
	CHECK(c->fd >= 0, "open %s/%s/bus", root, bus);
	memset(&c->hello, 0, sizeof(c->hello));
	c->hello.size = sizeof(c->hello);
	c->hello.flags = flags;
	c->hello.attach_flags_send = _KDBUS_ATTACH_ALL;
	c->hello.attach_flags_recv = _KDBUS_ATTACH_ALL;
	c->hello.pool_size = POOL_SIZE;
	CHECK(ioctl(c->fd, KDBUS_CMD_HELLO, &c->hello) == 0, "HELLO");
	c->id = c->hello.id;
	c->pool = mmap(NULL, POOL_SIZE, PROT_READ, MAP_SHARED, c->fd, 0);
	CHECK(c->pool != MAP_FAILED, "mmap pool");
}

static inline int free_slice(int fd, uint64_t offset)
{
	struct kdbus_cmd_free cmd = { .size = sizeof(cmd), .offset = offset };
	return ioctl(fd, KDBUS_CMD_FREE, &cmd);
}

#endif
