/* Metadata across namespaces (KDBUS-SPEC.md §8.4), as root:
 *  - B lives in a user namespace mapping only 0 -> 65534 (created by root) and in a child pid
 *    namespace. From root's connection A it gets every id as the overflow id, all pids as 0 (A is
 *    not visible in its pid namespace) and A's capabilities as full sets (the creator of a user
 *    namespace holds every capability inside it). A gets B's ids as they are outside (65534),
 *    B's real pids, and no capabilities (B's are only valid in its own namespace).
 *  - C lives in another mount namespace: EXE is dropped both ways (the roots differ).
 *  - BUS_CREATOR_INFO shows the creator (root) to B as 65534 and to A as 0.
 *  - D is root's connection with faked creds and a faked SECLABEL: CONN_INFO shows exactly those.
 * usage: namespaces MOUNT_ROOT */
#define _GNU_SOURCE
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>

#include "msgutil.h"

#define OVERFLOW 65534

static uint64_t full_caps;

static void put(int fd, uint64_t v)
{
	CHECK(write(fd, &v, sizeof(v)) == sizeof(v), "pipe write");
}

static uint64_t get(int fd)
{
	uint64_t v;
	CHECK(read(fd, &v, sizeof(v)) == sizeof(v), "pipe read");
	return v;
}

/* Wait for the next message of `c` and return it (the caller frees it). */
static struct kdbus_msg *next_msg(struct conn *c, uint64_t *offset)
{
	struct kdbus_cmd_recv recv;
	struct pollfd p = { .fd = c->fd, .events = POLLIN };
	CHECK(poll(&p, 1, 5000) == 1, "poll for a message");
	CHECK(recv_msg(c, &recv, 0, 0) == 0, "RECV");
	*offset = recv.msg.offset;
	return (struct kdbus_msg *)(c->pool + recv.msg.offset);
}

/* A call expecting a reply (cookie_reply 0), or the reply to call `cookie_reply`: replies pass
 * every policy, so users that may not talk to each other can still answer. */
static void send_to(struct conn *c, uint64_t dst, uint64_t cookie_reply)
{
	uint64_t buf[512];
	static const char data[8] = "ns-test";
	struct kdbus_msg *m = build_msg(buf, dst, NULL, data, sizeof(data),
					cookie_reply ? 0 : KDBUS_MSG_EXPECT_REPLY, 7);
	if (cookie_reply)
		m->cookie_reply = cookie_reply;
	else
		m->timeout_ns = now_ns() + 10000000000ULL;
	CHECK(send_msg(c->fd, m, 0, NULL) == 0, "SEND to %llu", (unsigned long long)dst);
}

static void check_creds(const struct kdbus_msg *m, uint64_t want, const char *who)
{
	const struct kdbus_item *it = find_item(m, KDBUS_ITEM_CREDS);
	CHECK(it, "%s: CREDS item", who);
	const struct kdbus_creds *c = &it->creds;
	uint64_t ids[8] = { c->uid, c->euid, c->suid, c->fsuid, c->gid, c->egid, c->sgid, c->fsgid };
	for (int i = 0; i < 8; i++)
		CHECK(ids[i] == want, "%s: creds id %d is %llu, want %llu", who, i,
		      (unsigned long long)ids[i], (unsigned long long)want);
	OK("%s: every uid and gid is %llu", who, (unsigned long long)want);
}

static void check_pids(const struct kdbus_msg *m, uint64_t pid, uint64_t ppid, const char *who)
{
	const struct kdbus_item *it = find_item(m, KDBUS_ITEM_PIDS);
	CHECK(it, "%s: PIDS item", who);
	CHECK(it->pids.pid == pid && it->pids.tid == pid && it->pids.ppid == ppid,
	      "%s: pids %llu/%llu/%llu, want %llu/%llu/%llu", who, (unsigned long long)it->pids.pid,
	      (unsigned long long)it->pids.tid, (unsigned long long)it->pids.ppid,
	      (unsigned long long)pid, (unsigned long long)pid, (unsigned long long)ppid);
	OK("%s: pids %llu/%llu/%llu", who, (unsigned long long)pid, (unsigned long long)pid,
	   (unsigned long long)ppid);
}

static void check_caps(const struct kdbus_msg *m, uint64_t inh, uint64_t rest, const char *who)
{
	const struct kdbus_item *it = find_item(m, KDBUS_ITEM_CAPS);
	CHECK(it, "%s: CAPS item", who);
	const uint32_t *words = it->caps.caps;
	for (int set = 0; set < 4; set++) {
		uint64_t bits = words[2 * set] | (uint64_t)words[2 * set + 1] << 32;
		uint64_t want = set == 0 ? inh : rest;
		CHECK(bits == want, "%s: capability set %d is %llx, want %llx", who, set,
		      (unsigned long long)bits, (unsigned long long)want);
	}
	OK("%s: inheritable %llx, the other sets %llx", who, (unsigned long long)inh,
	   (unsigned long long)rest);
}

static void check_exe(const struct kdbus_msg *m, int present, const char *who)
{
	CHECK(!find_item(m, KDBUS_ITEM_EXE) == !present, "%s: EXE %s", who, present ? "missing" : "present");
	OK("%s: EXE %s", who, present ? "attached" : "dropped");
}

/* BUS_CREATOR_INFO with CREDS: the creator's ids as `c` sees them. */
static void check_creator(struct conn *c, uint64_t want, const char *who)
{
	struct kdbus_cmd_info info = { .size = sizeof(info), .attach_flags = KDBUS_ATTACH_CREDS };
	CHECK(ioctl(c->fd, KDBUS_CMD_BUS_CREATOR_INFO, &info) == 0, "%s: BUS_CREATOR_INFO", who);
	const struct kdbus_info *got = (const void *)(c->pool + info.offset);
	const struct kdbus_item *shown;
	int found = 0;
	KDBUS_FOREACH(shown, got->items, got->size - offsetof(struct kdbus_info, items))
		if (shown->type == KDBUS_ITEM_CREDS) {
			found = 1;
			CHECK(shown->creds.uid == want && shown->creds.egid == want,
			      "%s: creator uid %llu, want %llu", who, (unsigned long long)shown->creds.uid,
			      (unsigned long long)want);
		}
	CHECK(found, "%s: CREDS item", who);
	OK("%s: creator's ids are %llu", who, (unsigned long long)want);
	free_slice(c->fd, info.offset);
}

/* HELLO with faked creds and label (the bus owner may), then CONN_INFO about it from A. */
static void check_faked(const char *root, const char *bus, struct conn *a)
{
	static const char label[] = "faked_u:faked_r:faked_t";
	uint64_t buf[128] = {0};
	struct kdbus_cmd_hello *h = (void *)buf;
	struct kdbus_item *it = h->items;
	int fd = open_bus(root, bus);
	CHECK(fd >= 0, "open bus");
	h->attach_flags_send = _KDBUS_ATTACH_ALL;
	h->attach_flags_recv = _KDBUS_ATTACH_ALL;
	h->pool_size = POOL_SIZE;
	it->type = KDBUS_ITEM_CREDS;
	it->size = KDBUS_ITEM_HEADER_SIZE + sizeof(struct kdbus_creds);
	it->creds = (struct kdbus_creds){ 11, 12, 13, 14, 21, 22, 23, 24 };
	it = KDBUS_ITEM_NEXT(it);
	it->type = KDBUS_ITEM_SECLABEL;
	it->size = KDBUS_ITEM_HEADER_SIZE + sizeof(label);
	memcpy(it->str, label, sizeof(label));
	it = KDBUS_ITEM_NEXT(it);
	h->size = (uint8_t *)it - (uint8_t *)h;
	CHECK(ioctl(fd, KDBUS_CMD_HELLO, h) == 0, "HELLO with faked creds and label");

	struct kdbus_cmd_info info = { .size = sizeof(info), .id = h->id,
				       .attach_flags = KDBUS_ATTACH_CREDS | KDBUS_ATTACH_PIDS |
						       KDBUS_ATTACH_SECLABEL | KDBUS_ATTACH_PID_COMM };
	CHECK(ioctl(a->fd, KDBUS_CMD_CONN_INFO, &info) == 0, "CONN_INFO about the faked connection");
	const struct kdbus_info *got = (const void *)(a->pool + info.offset);
	const struct kdbus_item *shown;
	int creds = 0, labels = 0, others = 0;
	KDBUS_FOREACH(shown, got->items, got->size - offsetof(struct kdbus_info, items)) {
		if (shown->type == KDBUS_ITEM_CREDS) {
			creds++;
			CHECK(shown->creds.uid == 11 && shown->creds.fsgid == 24, "faked creds shown as stated");
		} else if (shown->type == KDBUS_ITEM_SECLABEL) {
			labels++;
			CHECK(strcmp(shown->str, label) == 0, "faked label shown as stated: %s", shown->str);
		} else {
			others++;
		}
	}
	CHECK(creds == 1 && labels == 1 && others == 0, "CONN_INFO items: %d creds, %d labels, %d others",
	      creds, labels, others);
	OK("faked creds and SECLABEL in CONN_INFO, nothing else");
	free_slice(a->fd, info.offset);
	close(fd);
}

int main(int argc, char **argv)
{
	const char *root = argv[1];
	char bus[64], path[128];
	uint64_t buf[64], offset;
	int to_child[2], to_parent[2], pid_pipe[2];
	struct conn a;
	(void)argc;

	snprintf(bus, sizeof(bus), "%u-ns%d", geteuid(), getpid());
	snprintf(path, sizeof(path), "%s/control", root);
	int control = open(path, O_RDWR | O_CLOEXEC);
	CHECK(control >= 0, "open control");
	/* World access: B is uid 65534 outside its namespace. */
	/* The creator lets BUS_CREATOR_INFO show its creds. */
	struct kdbus_cmd *make = make_bus_cmd(buf, bus, KDBUS_MAKE_ACCESS_WORLD);
	struct kdbus_item *attach = item_at(make, make->size);
	attach->type = KDBUS_ITEM_ATTACH_FLAGS_SEND;
	attach->size = KDBUS_ITEM_HEADER_SIZE + sizeof(uint64_t);
	attach->data64[0] = KDBUS_ATTACH_CREDS;
	make->size += attach->size;
	CHECK(ioctl(control, KDBUS_CMD_BUS_MAKE, make) == 0, "BUS_MAKE");
	hello(&a, root, bus, 0);

	FILE *f = fopen("/proc/sys/kernel/cap_last_cap", "r");
	int last_cap = 40;
	CHECK(f && fscanf(f, "%d", &last_cap) == 1, "cap_last_cap");
	fclose(f);
	full_caps = last_cap >= 63 ? ~0ULL : (1ULL << (last_cap + 1)) - 1;

	/* B: a user namespace and a pid namespace of its own. */
	CHECK(pipe(to_child) == 0 && pipe(to_parent) == 0 && pipe(pid_pipe) == 0, "pipes");
	pid_t middle = fork();
	CHECK(middle >= 0, "fork");
	if (middle == 0) {
		CHECK(unshare(CLONE_NEWUSER | CLONE_NEWPID) == 0, "unshare user+pid namespaces");
		put(to_parent[1], 1);     /* ready for the id maps */
		get(to_child[0]);         /* mapped */
		/* Root inside is uid 65534 outside; the namespace stays owned by its creator, uid 0. */
		CHECK(setresgid(0, 0, 0) == 0 && setresuid(0, 0, 0) == 0, "become root of the user namespace");
		pid_t inner = fork();      /* pid 1 of the new pid namespace */
		CHECK(inner >= 0, "fork into the pid namespace");
		if (inner == 0) {
			struct conn b;
			CHECK(getpid() == 1, "pid 1 in the new pid namespace");
			hello(&b, root, bus, 0);
			put(to_parent[1], b.id);
			get(to_child[0]);  /* A has sent */
			struct kdbus_msg *m = next_msg(&b, &offset);
			CHECK(m->src_id == a.id, "B: message from A");
			check_creds(m, OVERFLOW, "B sees root");
			check_pids(m, 0, 0, "B sees a task outside its pid namespace");
			check_caps(m, 0, full_caps, "B sees the creator of its user namespace");
			check_exe(m, 1, "B, same root as A");
			uint64_t cookie = m->cookie;
			free_slice(b.fd, offset);
			check_creator(&b, OVERFLOW, "B asks about root's bus");
			send_to(&b, a.id, cookie);
			_exit(0);
		}
		put(pid_pipe[1], (uint64_t)inner);  /* its pid outside */
		int status;
		CHECK(waitpid(inner, &status, 0) == inner, "wait for B");
		_exit(WIFEXITED(status) ? WEXITSTATUS(status) : 1);
	}
	get(to_parent[0]);
	const char *maps[] = { "uid_map", "gid_map" };
	for (int i = 0; i < 2; i++) {
		snprintf(path, sizeof(path), "/proc/%d/%s", middle, maps[i]);
		int fd = open(path, O_WRONLY | O_CLOEXEC);
		CHECK(fd >= 0 && write(fd, "0 65534 1", 9) == 9, "write %s", path);
		close(fd);
	}
	put(to_child[1], 1);
	uint64_t b_id = get(to_parent[0]);
	uint64_t b_pid = get(pid_pipe[0]);
	send_to(&a, b_id, 0);
	put(to_child[1], 1);
	struct kdbus_msg *m = next_msg(&a, &offset);
	CHECK(m->src_id == b_id, "A: message from B");
	check_creds(m, OVERFLOW, "A sees B");
	check_pids(m, b_pid, (uint64_t)middle, "A sees B's pids");
	check_caps(m, 0, 0, "A sees B's namespaced capabilities");
	check_exe(m, 1, "A, same root as B");
	free_slice(a.fd, offset);
	int status;
	CHECK(waitpid(middle, &status, 0) == middle && WIFEXITED(status) && WEXITSTATUS(status) == 0,
	      "B's checks passed");

	/* C: another mount namespace. */
	pid_t other = fork();
	CHECK(other >= 0, "fork");
	if (other == 0) {
		struct conn c;
		CHECK(unshare(CLONE_NEWNS) == 0, "unshare mount namespace");
		hello(&c, root, bus, 0);
		put(to_parent[1], c.id);
		struct kdbus_msg *cm = next_msg(&c, &offset);
		check_creds(cm, 0, "C sees root");
		check_exe(cm, 0, "C, another mount namespace");
		uint64_t cookie = cm->cookie;
		free_slice(c.fd, offset);
		send_to(&c, a.id, cookie);
		_exit(0);
	}
	uint64_t c_id = get(to_parent[0]);
	send_to(&a, c_id, 0);
	m = next_msg(&a, &offset);
	CHECK(m->src_id == c_id, "A: message from C");
	check_exe(m, 0, "A, C in another mount namespace");
	free_slice(a.fd, offset);
	CHECK(waitpid(other, &status, 0) == other && WIFEXITED(status) && WEXITSTATUS(status) == 0,
	      "C's checks passed");
	check_creator(&a, 0, "A asks about its own bus");
	check_faked(root, bus, &a);
	close(control);
	printf("namespaces: all checks passed\n");
	return 0;
}
