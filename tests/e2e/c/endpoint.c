/* Custom endpoints: made by the bus owner beside `bus`, closed to everything until their policy
 * opens it, gone with their owner's fd.  usage (as root): endpoint MOUNT_ROOT */
#include <sys/stat.h>

#include "msgutil.h"

static uint64_t msgbuf[1024];

static int endpoint_make(int fd, const char *name, uint64_t flags)
{
	uint64_t buf[64] = {0};
	struct kdbus_cmd *cmd = (void *)buf;
	struct kdbus_item *it = (void *)((uint8_t *)cmd + sizeof(*cmd));
	it->type = KDBUS_ITEM_MAKE_NAME;
	it->size = KDBUS_ITEM_HEADER_SIZE + strlen(name) + 1;
	memcpy((uint8_t *)it + KDBUS_ITEM_HEADER_SIZE, name, strlen(name) + 1);
	cmd->size = sizeof(*cmd) + KDBUS_ALIGN8(it->size);
	cmd->flags = flags;
	return ioctl(fd, KDBUS_CMD_ENDPOINT_MAKE, cmd);
}

/* ENDPOINT_UPDATE / UPDATE with NAME + POLICY_ACCESS groups given as (name, type, access) triples. */
static int policy(int fd, unsigned long request, int n, const char **names, const uint64_t *types,
		  const uint64_t *access, int access_first)
{
	uint64_t buf[256] = {0};
	struct kdbus_cmd *cmd = (void *)buf;
	size_t size = sizeof(*cmd);
	for (int i = 0; i < n; i++) {
		struct kdbus_policy_access pa = { .type = types[i], .access = access[i] };
		struct kdbus_item *it;
		for (int part = 0; part < 2; part++) {
			it = (void *)((uint8_t *)buf + size);
			if ((part == 0) != (access_first != 0)) {
				it->type = KDBUS_ITEM_NAME;
				it->size = KDBUS_ITEM_HEADER_SIZE + strlen(names[i]) + 1;
				memcpy((uint8_t *)it + KDBUS_ITEM_HEADER_SIZE, names[i], strlen(names[i]) + 1);
			} else {
				it->type = KDBUS_ITEM_POLICY_ACCESS;
				it->size = KDBUS_ITEM_HEADER_SIZE + sizeof(pa);
				memcpy((uint8_t *)it + KDBUS_ITEM_HEADER_SIZE, &pa, sizeof(pa));
			}
			size += KDBUS_ALIGN8(it->size);
		}
	}
	cmd->size = size;
	return ioctl(fd, request, cmd);
}

static int conn_info_by_name(struct conn *c, const char *name)
{
	uint64_t buf[64] = {0};
	struct kdbus_cmd_info *info = (void *)buf;
	struct kdbus_item *it = (void *)((uint8_t *)info + sizeof(*info));
	it->type = KDBUS_ITEM_NAME;
	it->size = KDBUS_ITEM_HEADER_SIZE + strlen(name) + 1;
	memcpy((uint8_t *)it + KDBUS_ITEM_HEADER_SIZE, name, strlen(name) + 1);
	info->size = sizeof(*info) + KDBUS_ALIGN8(it->size);
	int r = ioctl(c->fd, KDBUS_CMD_CONN_INFO, info);
	if (r == 0)
		free_slice(c->fd, info->offset);
	return r;
}

int main(int argc, char **argv)
{
	const char *root = argc > 1 ? argv[1] : "/sys/fs/kdbus";
	char bus[64], suffix[32], ep[64], path[4096];
	struct conn d, e;
	struct stat st;

	snprintf(suffix, sizeof(suffix), "ep%d", getpid());
	int control = make_bus(root, suffix, bus, sizeof(bus));
	snprintf(ep, sizeof(ep), "%u-custom", geteuid());

	int owner = open_bus(root, bus);
	CHECK(endpoint_make(owner, ep, KDBUS_MAKE_ACCESS_WORLD) == 0, "ENDPOINT_MAKE");
	snprintf(path, sizeof(path), "%s/%s/%s", root, bus, ep);
	CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0666 && st.st_uid == geteuid(), "endpoint file mode %o",
	      st.st_mode & 0777);
	OK("ENDPOINT_MAKE: %s beside bus, mode 0666", ep);
	int other = open_bus(root, bus);
	CHECK(endpoint_make(other, ep, 0) < 0 && errno == EEXIST, "same name -> EEXIST");
	close(other);
	other = open_bus(root, bus);
	CHECK(endpoint_make(other, "custom2", 0) < 0 && errno == EINVAL, "no uid prefix -> EINVAL");
	close(other);
	other = open(path, O_RDWR | O_CLOEXEC);
	char ep2[64];
	snprintf(ep2, sizeof(ep2), "%u-another", geteuid());
	CHECK(endpoint_make(other, ep2, 0) < 0 && errno == EPERM, "through a custom endpoint -> EPERM");
	close(other);
	CHECK(ioctl(owner, KDBUS_CMD_HELLO, msgbuf) < 0 && errno == EBADFD, "HELLO on the endpoint owner -> EBADFD");
	OK("ENDPOINT_MAKE errors");

	hello(&d, root, bus, 0);
	CHECK(name_cmd(d.fd, KDBUS_CMD_NAME_ACQUIRE, "com.example.svc", 0, NULL) == 0, "d owns com.example.svc");
	CHECK(name_cmd(d.fd, KDBUS_CMD_NAME_ACQUIRE, "com.example.hidden", 0, NULL) == 0, "d owns com.example.hidden");

	/* Connect through the custom endpoint: nothing is allowed or visible yet, even for root. */
	e.fd = open(path, O_RDWR | O_CLOEXEC);
	CHECK(e.fd >= 0, "open custom endpoint");
	{
		struct kdbus_cmd_hello h = { .size = sizeof(h), .flags = KDBUS_HELLO_MONITOR, .pool_size = POOL_SIZE };
		CHECK(ioctl(e.fd, KDBUS_CMD_HELLO, &h) < 0 && errno == EOPNOTSUPP, "monitor on a custom endpoint -> EOPNOTSUPP");
		h.flags = 0;
		CHECK(ioctl(e.fd, KDBUS_CMD_HELLO, &h) == 0, "HELLO on the custom endpoint");
		e.id = h.id;
		e.pool = mmap(NULL, POOL_SIZE, PROT_READ, MAP_SHARED, e.fd, 0);
		free_slice(e.fd, h.offset);
	}
	CHECK(name_cmd(e.fd, KDBUS_CMD_NAME_ACQUIRE, "com.example.mine", 0, NULL) < 0 && errno == EPERM,
	      "empty endpoint policy: no OWN");
	struct kdbus_msg *m = build_msg(msgbuf, 0, "com.example.svc", NULL, 0, 0, 1);
	CHECK(send_msg(e.fd, m, 0, NULL) < 0 && errno == EPERM, "empty endpoint policy: no TALK");
	CHECK(conn_info_by_name(&e, "com.example.svc") < 0 && errno == ESRCH, "empty endpoint policy: names hidden");
	struct kdbus_cmd_info info = { .size = sizeof(info), .id = d.id };
	CHECK(ioctl(e.fd, KDBUS_CMD_CONN_INFO, &info) < 0 && errno == ENXIO, "empty endpoint policy: peers hidden");
	OK("a custom endpoint starts closed");

	/* Open it: TALK to com.example.svc, OWN com.example.mine. */
	const char *names[] = { "com.example.svc", "com.example.mine" };
	uint64_t types[] = { KDBUS_POLICY_ACCESS_WORLD, KDBUS_POLICY_ACCESS_WORLD };
	uint64_t access[] = { KDBUS_POLICY_TALK, KDBUS_POLICY_OWN };
	CHECK(policy(owner, KDBUS_CMD_ENDPOINT_UPDATE, 2, names, types, access, 1) < 0 && errno == EINVAL,
	      "POLICY_ACCESS before NAME -> EINVAL");
	CHECK(policy(e.fd, KDBUS_CMD_ENDPOINT_UPDATE, 2, names, types, access, 0) < 0 && errno == EBADFD,
	      "ENDPOINT_UPDATE on a connection -> EBADFD");
	CHECK(policy(owner, KDBUS_CMD_ENDPOINT_UPDATE, 2, names, types, access, 0) == 0, "ENDPOINT_UPDATE");
	CHECK(send_msg(e.fd, m, 0, NULL) == 0, "TALK to com.example.svc through the endpoint");
	struct kdbus_cmd_recv recv;
	CHECK(recv_msg(&d, &recv, 0, 0) == 0, "d got it");
	free_slice(d.fd, recv.msg.offset);
	CHECK(conn_info_by_name(&e, "com.example.svc") == 0, "com.example.svc visible");
	CHECK(conn_info_by_name(&e, "com.example.hidden") < 0 && errno == ESRCH, "com.example.hidden still hidden");
	CHECK(ioctl(e.fd, KDBUS_CMD_CONN_INFO, &info) == 0, "d visible through its visible name");
	free_slice(e.fd, info.offset);
	/* OWN needs the bus policy too: no owner rights through a custom endpoint. */
	CHECK(name_cmd(e.fd, KDBUS_CMD_NAME_ACQUIRE, "com.example.mine", 0, NULL) < 0 && errno == EPERM,
	      "endpoint OWN alone is not enough");
	struct conn holder;
	{
		uint64_t hbuf[64] = {0};
		struct kdbus_cmd_hello *h = (void *)hbuf;
		struct kdbus_item *it = (void *)((uint8_t *)h + sizeof(*h));
		struct kdbus_policy_access own = { .type = KDBUS_POLICY_ACCESS_WORLD, .access = KDBUS_POLICY_OWN };
		it->type = KDBUS_ITEM_NAME;
		it->size = KDBUS_ITEM_HEADER_SIZE + sizeof("com.example.mine");
		memcpy((uint8_t *)it + KDBUS_ITEM_HEADER_SIZE, "com.example.mine", sizeof("com.example.mine"));
		size_t size = sizeof(*h) + KDBUS_ALIGN8(it->size);
		it = (void *)((uint8_t *)hbuf + size);
		it->type = KDBUS_ITEM_POLICY_ACCESS;
		it->size = KDBUS_ITEM_HEADER_SIZE + sizeof(own);
		memcpy((uint8_t *)it + KDBUS_ITEM_HEADER_SIZE, &own, sizeof(own));
		h->size = size + KDBUS_ALIGN8(it->size);
		h->flags = KDBUS_HELLO_POLICY_HOLDER;
		h->pool_size = POOL_SIZE;
		holder.fd = open_bus(root, bus);
		CHECK(ioctl(holder.fd, KDBUS_CMD_HELLO, h) == 0, "policy holder");
	}
	CHECK(name_cmd(e.fd, KDBUS_CMD_NAME_ACQUIRE, "com.example.mine", 0, NULL) == 0, "endpoint + bus policy: OWN");
	OK("ENDPOINT_UPDATE opens TALK, SEE and (with bus policy) OWN");

	/* Closing the owner's fd removes the endpoint and disconnects its connections. */
	close(owner);
	CHECK(stat(path, &st) < 0 && errno == ENOENT, "endpoint file gone");
	CHECK(name_cmd(e.fd, KDBUS_CMD_NAME_RELEASE, "com.example.mine", 0, NULL) < 0 && errno == ECONNRESET,
	      "its connection is gone");
	CHECK(conn_info_by_name(&d, "com.example.mine") < 0 && errno == ESRCH, "and its name released");
	OK("endpoint gone with its owner's fd");
	close(holder.fd);
	close(control);
	printf("endpoint: all checks passed\n");
	return 0;
}
