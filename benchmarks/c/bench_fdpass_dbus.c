/* dbus-daemon: the same calls, each passing a descriptor (a pipe, or a sealed memfd the callee
 * maps and reads) as a UNIX_FD argument through a D-Bus broker with libdbus.
 * usage: bench_fdpass_dbus ADDRESS fd|memfd SIZE SECONDS  -> "dbus-daemon SIZE CALLS_PER_SECOND" */
#define _GNU_SOURCE
#include <sys/wait.h>

#include "bench_fdpass_common.h"
#include "dbus_client.h"

#define NAME "org.kdbusfs.Bench"

static void serve(const char *address, int ready, size_t size)
{
	DBusError err;
	DBusConnection *c = connect_to(address);
	dbus_error_init(&err);
	if (dbus_bus_request_name(c, NAME, DBUS_NAME_FLAG_DO_NOT_QUEUE, &err) !=
	    DBUS_REQUEST_NAME_REPLY_PRIMARY_OWNER) {
		fprintf(stderr, "request_name failed\n");
		exit(1);
	}
	if (write(ready, "r", 1) != 1)
		exit(1);
	for (;;) {
		dbus_connection_read_write(c, -1);
		DBusMessage *m;
		while ((m = dbus_connection_pop_message(c))) {
			if (dbus_message_is_method_call(m, NAME, "Stop"))
				_exit(0);
			if (!dbus_message_is_method_call(m, NAME, "Call")) {
				dbus_message_unref(m);
				continue;
			}
			int fd = -1;
			dbus_message_get_args(m, NULL, DBUS_TYPE_UNIX_FD, &fd, DBUS_TYPE_INVALID);
			dbus_uint64_t answer = bench_consume(fd, size);
			DBusMessage *r = dbus_message_new_method_return(m);
			dbus_message_append_args(r, DBUS_TYPE_UINT64, &answer, DBUS_TYPE_INVALID);
			dbus_connection_send(c, r, NULL);
			dbus_connection_flush(c);
			dbus_message_unref(r);
			dbus_message_unref(m);
		}
	}
}

int main(int argc, char **argv)
{
	if (argc != 5)
		return 2;
	const char *address = argv[1], *kind = argv[2];
	size_t size = strtoull(argv[3], NULL, 0);
	double seconds = atof(argv[4]);
	int ready[2];
	char r;

	int fd = bench_descriptor(kind, size);
	if (pipe(ready) < 0)
		return 1;
	pid_t child = fork();
	if (child == 0)
		serve(address, ready[1], strcmp(kind, "memfd") == 0 ? size : 0);
	if (read(ready[0], &r, 1) != 1)
		return 1;
	DBusConnection *c = connect_to(address);
	long n = 0;
	double start = bench_now(), end = start + seconds;
	do {
		for (int i = 0; i < 20; i++, n++) {
			DBusMessage *m = dbus_message_new_method_call(NAME, "/", NAME, "Call");
			dbus_message_append_args(m, DBUS_TYPE_UNIX_FD, &fd, DBUS_TYPE_INVALID);
			DBusError err;
			dbus_error_init(&err);
			DBusMessage *reply = dbus_connection_send_with_reply_and_block(c, m, 5000, &err);
			if (!reply) {
				fprintf(stderr, "call: %s\n", err.message);
				return 1;
			}
			dbus_message_unref(reply);
			dbus_message_unref(m);
		}
	} while (bench_now() < end);
	report("dbus-daemon", size, n, bench_now() - start);
	DBusMessage *stop = dbus_message_new_method_call(NAME, "/", NAME, "Stop");
	dbus_message_set_no_reply(stop, TRUE);
	dbus_connection_send(c, stop, NULL);
	dbus_connection_flush(c);
	waitpid(child, NULL, 0);
	return 0;
}
