#define _GNU_SOURCE
/* Default policy between users: a bus made open to all (ACCESS_WORLD) by one user, used by another.
 * Unprivileged users may talk to their own uid's connections only and own no names; the bus
 * owner may do both.  usage (as root): policy MOUNT_ROOT UID */
#include <poll.h>
#include <sys/wait.h>

#include "msgutil.h"

static uint64_t msgbuf[1024];

int main(int argc, char **argv)
{
	CHECK(argc == 3, "usage: policy MOUNT_ROOT UID");
	const char *root = argv[1];
	uid_t uid = (uid_t)atoi(argv[2]);
	char bus[64], path[4096];
	uint64_t buf[64];
	struct conn owner;
	struct kdbus_cmd_recv recv;

	snprintf(bus, sizeof(bus), "%u-policy%d", geteuid(), getpid());
	snprintf(path, sizeof(path), "%s/control", root);
	int control = open(path, O_RDWR | O_CLOEXEC);
	CHECK(control >= 0, "open control");
	CHECK(ioctl(control, KDBUS_CMD_BUS_MAKE, make_bus_cmd(buf, bus, KDBUS_MAKE_ACCESS_WORLD)) == 0, "BUS_MAKE world");
	hello(&owner, root, bus, 0);
	CHECK(name_cmd(owner.fd, KDBUS_CMD_NAME_ACQUIRE, "com.example.owner", 0, NULL) == 0, "owner acquires a name");

	int ids[2];
	CHECK(pipe(ids) == 0, "pipe");
	pid_t child = fork();
	if (child == 0) {
		struct conn user, user2;
		CHECK(setresgid(uid, uid, uid) == 0 && setresuid(uid, uid, uid) == 0, "drop to uid %u", uid);
		hello(&user, root, bus, 0);
		hello(&user2, root, bus, 0);
		CHECK(write(ids[1], &user.id, sizeof(user.id)) == sizeof(user.id), "tell id");
		errno = 0;
		CHECK(name_cmd(user.fd, KDBUS_CMD_NAME_ACQUIRE, "com.example.mine", 0, NULL) < 0 && errno == EPERM,
		      "unprivileged NAME_ACQUIRE -> EPERM");
		OK("an unprivileged user owns no name without policy");
		struct kdbus_msg *m = build_msg(msgbuf, owner.id, NULL, NULL, 0, 0, 1);
		EXPECT_ERRNO(EPERM, user.fd, KDBUS_CMD_SEND,
			     (&(struct kdbus_cmd_send){ .size = 56, .msg_address = (uintptr_t)m }),
			     "SEND to another user's connection");
		m = build_msg(msgbuf, 0, "com.example.owner", NULL, 0, 0, 2);
		EXPECT_ERRNO(EPERM, user.fd, KDBUS_CMD_SEND,
			     (&(struct kdbus_cmd_send){ .size = 56, .msg_address = (uintptr_t)m }),
			     "SEND to another user's name");
		m = build_msg(msgbuf, user2.id, NULL, "same", 4, 0, 3);
		CHECK(send_msg(user.fd, m, 0, NULL) == 0, "SEND to a connection of the same user");
		CHECK(recv_msg(&user2, &recv, 0, 0) == 0, "RECV from the same user");
		OK("talk within one user");
		/* Wait for the owner's message: poll until it is queued, for at most 5 s. */
		struct pollfd pu = { .fd = user.fd, .events = POLLIN };
		CHECK(poll(&pu, 1, 5000) == 1 && (pu.revents & POLLIN), "the bus owner's message arrived within 5 s");
		CHECK(recv_msg(&user, &recv, 0, 0) == 0, "RECV the bus owner's message");
		struct kdbus_msg *got = (void *)(user.pool + recv.msg.offset);
		CHECK(got->src_id == owner.id, "message from the bus owner arrived");
		OK("the bus owner may talk to anyone");
		_exit(0);
	}
	uint64_t user_id;
	CHECK(read(ids[0], &user_id, sizeof(user_id)) == sizeof(user_id), "read id");
	struct kdbus_msg *m = build_msg(msgbuf, user_id, NULL, "hi", 2, 0, 9);
	CHECK(send_msg(owner.fd, m, 0, NULL) == 0, "owner SEND to the user");
	int status;
	CHECK(waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0, "child passed");
	close(control);
	printf("policy: all checks passed\n");
	return 0;
}
