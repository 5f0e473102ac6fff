/* Broadcast deliveries per second through dbus-daemon: one sender emitting signals (a byte array),
 * N subscribers with a match rule on their interface.
 * usage: bench_signal_dbus ADDRESS N PAYLOAD COUNT -> "dbus-daemon N PAYLOAD DELIVERIES_PER_SECOND" */
#include "dbus_client.h"

#include "bench_signal_common.h"

#define IFACE "org.kdbusfs.BenchSignals"

int main(int argc, char **argv)
{
	const char *address = argv[1];
	int n = atoi(argv[2]);
	size_t payload = strtoull(argv[3], NULL, 0);
	long count = atol(argv[4]);
	struct plumbing p;

	plumbing_init(&p, n, payload);
	for (int i = 0; i < n; i++) {
		if (fork() != 0)
			continue;
		DBusConnection *c = connect_to(address);
		DBusError err;
		dbus_error_init(&err);
		dbus_bus_add_match(c, "type='signal',interface='" IFACE "'", &err);
		if (dbus_error_is_set(&err)) {
			fprintf(stderr, "add_match: %s\n", err.message);
			_exit(1);
		}
		subscriber_ready(&p);
		for (long got = 0; got < count;) {
			dbus_connection_read_write(c, -1);
			DBusMessage *m;
			while ((m = dbus_connection_pop_message(c))) {
				if (dbus_message_is_signal(m, IFACE, "Tick")) {
					uint8_t *data = NULL;
					int len = 0;
					dbus_message_get_args(m, NULL, DBUS_TYPE_ARRAY, DBUS_TYPE_BYTE, &data, &len,
							      DBUS_TYPE_INVALID);
					touch(data, len);
					if (subscriber_due(&p, ++got))
						subscriber_ack(&p, i);
				}
				dbus_message_unref(m);
			}
		}
		_exit(0);
	}
	DBusConnection *c = connect_to(address);
	sender_wait_ready(&p);
	uint8_t *data = calloc(1, payload + 8);
	long acked = 0;
	double start = bench_now();
	for (long sent = 0; sent < count; sent++) {
		sender_pace(&p, sent, &acked);
		DBusMessage *m = dbus_message_new_signal("/", IFACE, "Tick");
		const uint8_t *ptr = data;
		dbus_message_append_args(m, DBUS_TYPE_ARRAY, DBUS_TYPE_BYTE, &ptr, (int)payload, DBUS_TYPE_INVALID);
		dbus_connection_send(c, m, NULL);
		dbus_connection_flush(c);
		dbus_message_unref(m);
	}
	sender_finish(&p, "dbus-daemon", payload, count, start);
	return 0;
}
