/* What the dbus-daemon benchmark clients share: a private, registered connection. */
#ifndef BENCH_DBUS_CLIENT_H
#define BENCH_DBUS_CLIENT_H

#include <dbus/dbus.h>
#include <stdio.h>
#include <stdlib.h>

static inline DBusConnection *connect_to(const char *address)
{
	DBusError err;
	dbus_error_init(&err);
	DBusConnection *c = dbus_connection_open_private(address, &err);
	if (!c || !dbus_bus_register(c, &err)) {
		fprintf(stderr, "connect: %s\n", err.message);
		exit(1);
	}
	return c;
}

#endif
