/* dbus-daemon: the same synchronous method-call pattern through a D-Bus broker with libdbus.
 * The callee owns "org.kdbusfs.Bench" and answers each call (a byte array) with a uint64.
 * With KIND, each call passes a descriptor (a UNIX_FD argument) instead: "fd" a pipe, "memfd" a
 * sealed memfd of PAYLOAD_BYTES that the callee maps and reads; the callee closes it.
 * usage: bench_dbus ADDRESS PAYLOAD_BYTES SECONDS [fd|memfd]
 *   -> "dbus-daemon PAYLOAD CALLS_PER_SECOND" */
#define _GNU_SOURCE
#include <sys/wait.h>
#include <unistd.h>

#include "bench_fdpass_common.h"
#include "dbus_client.h"

#define NAME "org.kdbusfs.Bench"

static void serve(const char *address, int ready, size_t memfd_size)
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
			dbus_uint64_t answer;
			int fd = -1;
			if (dbus_message_get_args(m, NULL, DBUS_TYPE_UNIX_FD, &fd, DBUS_TYPE_INVALID)) {
				answer = bench_consume(fd, memfd_size);
			} else {
				uint8_t *data = NULL;
				int len = 0;
				dbus_message_get_args(m, NULL, DBUS_TYPE_ARRAY, DBUS_TYPE_BYTE, &data, &len,
						      DBUS_TYPE_INVALID);
				answer = touch(data, len);
			}
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
	const char *address = argv[1];
	size_t payload = strtoull(argv[2], NULL, 0);
	double seconds = atof(argv[3]);
	const char *kind = argc > 4 ? argv[4] : NULL;
	int fd = kind ? bench_descriptor(kind, payload) : -1;
	uint8_t *data = calloc(1, payload + 8);
	int ready[2];
	char r;

	if (pipe(ready) < 0)
		return 1;
	pid_t child = fork();
	if (child == 0)
		serve(address, ready[1], kind && strcmp(kind, "memfd") == 0 ? payload : 0);
	if (read(ready[0], &r, 1) != 1)
		return 1;
	DBusConnection *c = connect_to(address);
	long n = 0;
	double start = bench_now(), end = start + seconds;
	do {
		for (int i = 0; i < 20; i++, n++) {
			DBusMessage *m = dbus_message_new_method_call(NAME, "/", NAME, "Call");
			const uint8_t *p = data;
			if (kind)
				dbus_message_append_args(m, DBUS_TYPE_UNIX_FD, &fd, DBUS_TYPE_INVALID);
			else
				dbus_message_append_args(m, DBUS_TYPE_ARRAY, DBUS_TYPE_BYTE, &p, (int)payload,
							 DBUS_TYPE_INVALID);
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
	report("dbus-daemon", payload, n, bench_now() - start);
	DBusMessage *stop = dbus_message_new_method_call(NAME, "/", NAME, "Stop");
	dbus_message_set_no_reply(stop, TRUE);
	dbus_connection_send(c, stop, NULL);
	dbus_connection_flush(c);
	waitpid(child, NULL, 0);
	return 0;
}
