/* A long-lived client driven line by line from stdin, for tests that need a peer to stay, die or
 * act on cue.  usage: holder MOUNT_ROOT BUS      (connect to an existing bus)
 *                     holder MOUNT_ROOT +SUFFIX  (create "<euid>-SUFFIX", own it, connect to it)
 * Prints "bus NAME" and "id N", then answers commands:
 *   info ID     CONN_INFO of ID          -> "ok ID FLAGS" or "errno N"
 *   creator     BUS_CREATOR_INFO         -> "ok NAME" or "errno N"
 *   list        LIST UNIQUE              -> "ok ID ID ..." or "errno N"
 *   byebye      BYEBYE                   -> "ok" or "errno N"
 *   close       close the bus-owner fd   -> "ok"
 *   quit */
#include "util.h"

static void reply_errno(void) { printf("errno %d\n", errno); }

int main(int argc, char **argv)
{
	char bus[128], line[256];
	int owner = -1;
	struct conn c;

	CHECK(argc == 3, "usage: holder MOUNT_ROOT BUS|+SUFFIX");
	if (argv[2][0] == '+')
		owner = make_bus(argv[1], argv[2] + 1, bus, sizeof(bus));
	else
		snprintf(bus, sizeof(bus), "%s", argv[2]);
	hello(&c, argv[1], bus, 0);
	free_slice(c.fd, c.hello.offset);
	printf("bus %s\nid %llu\n", bus, (unsigned long long)c.id);
	fflush(stdout);

	while (fgets(line, sizeof(line), stdin)) {
		unsigned long long id;
		if (sscanf(line, "info %llu", &id) == 1) {
			struct kdbus_cmd_info info = { .size = sizeof(info), .id = id };
			if (ioctl(c.fd, KDBUS_CMD_CONN_INFO, &info) < 0) {
				reply_errno();
			} else {
				struct kdbus_info *i = (void *)(c.pool + info.offset);
				printf("ok %llu %llu\n", (unsigned long long)i->id, (unsigned long long)i->flags);
				free_slice(c.fd, info.offset);
			}
		} else if (strncmp(line, "creator", 7) == 0) {
			struct kdbus_cmd_info info = { .size = sizeof(info) };
			if (ioctl(c.fd, KDBUS_CMD_BUS_CREATOR_INFO, &info) < 0) {
				reply_errno();
			} else {
				struct kdbus_info *i = (void *)(c.pool + info.offset);
				printf("ok %s\n", i->items[0].str);
				free_slice(c.fd, info.offset);
			}
		} else if (strncmp(line, "list", 4) == 0) {
			struct kdbus_cmd_list cmd = { .size = sizeof(cmd), .flags = KDBUS_LIST_UNIQUE };
			if (ioctl(c.fd, KDBUS_CMD_LIST, &cmd) < 0) {
				reply_errno();
			} else {
				printf("ok");
				for (uint64_t off = 0; off < cmd.list_size;) {
					struct kdbus_info *i = (void *)(c.pool + cmd.offset + off);
					printf(" %llu", (unsigned long long)i->id);
					off += KDBUS_ALIGN8(i->size);
				}
				printf("\n");
				free_slice(c.fd, cmd.offset);
			}
		} else if (strncmp(line, "byebye", 6) == 0) {
			struct kdbus_cmd cmd = { .size = sizeof(cmd) };
			if (ioctl(c.fd, KDBUS_CMD_BYEBYE, &cmd) < 0)
				reply_errno();
			else
				printf("ok\n");
		} else if (strncmp(line, "close", 5) == 0) {
			if (owner >= 0)
				close(owner);
			owner = -1;
			printf("ok\n");
		} else if (strncmp(line, "quit", 4) == 0) {
			break;
		} else {
			printf("unknown command\n");
		}
		fflush(stdout);
	}
	return 0;
}
