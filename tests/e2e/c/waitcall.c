/* A synchronous call nobody answers (60 s deadline): prints "calling", then, once the SEND
 * returns, "returned RET errno E". Used to show that a launched caller left waiting is released
 * when the daemon goes away.
 * usage: waitcall MOUNT_ROOT */
#include "msgutil.h"

int main(int argc, char **argv)
{
	CHECK(argc == 2, "usage: waitcall MOUNT_ROOT");
	char bus[64], suffix[32];
	struct conn a, b;
	static uint64_t buf[512];

	snprintf(suffix, sizeof(suffix), "waitcall%d", getpid());
	int owner = make_bus(argv[1], suffix, bus, sizeof(bus));
	hello(&a, argv[1], bus, 0);
	hello(&b, argv[1], bus, 0);
	struct kdbus_msg *m = build_msg(buf, b.id, NULL, NULL, 0, KDBUS_MSG_EXPECT_REPLY, 1);
	m->timeout_ns = now_ns() + 60ULL * 1000000000ULL;
	printf("calling\n");
	fflush(stdout);
	int ret = send_msg(a.fd, m, KDBUS_SEND_SYNC_REPLY, NULL);
	printf("returned %d errno %d\n", ret, ret < 0 ? errno : 0);
	close(owner);
	return 0;
}
