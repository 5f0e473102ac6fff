/*
 * kdbus.h - client-side interface definitions for kdbusfs
 *
 * kdbusfs is a FUSE-based userspace implementation of the kdbus IPC bus.
 * The declarations in the first part of this file describe the binary
 * interface (structure layouts, enum values and ioctl request numbers)
 * spoken over the kdbusfs device nodes.  They match the final kdbus
 * kernel interface of August 2015 bit for bit, so that existing kdbus
 * client programs build and run against kdbusfs without modification.
 *
 * All structures exchanged with kdbusfs are 8-byte aligned and are
 * laid out using fixed-width kernel types only.  Variable-length data
 * is carried in trailing lists of "items" (struct kdbus_item), each of
 * which starts with its own size and type and is padded to 8 bytes.
 *
 * The second part of this file holds a few helper macros for walking
 * item lists.  Those helpers are kdbusfs conveniences and are not part
 * of the kernel ABI.
 */

#ifndef KDBUSFS_KDBUS_H
#define KDBUSFS_KDBUS_H

#include <linux/ioctl.h>
#include <linux/types.h>

/* ======================================================================
 * Part 1: binary interface (must stay identical to upstream kdbus)
 * ====================================================================== */

/* ioctl "type" byte used by every kdbus command */
#define KDBUS_IOCTL_MAGIC		0x95

/* Sender id of messages that originate from the bus itself */
#define KDBUS_SRC_ID_KERNEL		(0)
/* Destination id meaning "look up the destination by well-known name" */
#define KDBUS_DST_ID_NAME		(0)
/* Wildcard id in match rules */
#define KDBUS_MATCH_ID_ANY		(~0ULL)
/* Destination id for signals delivered to every interested peer */
#define KDBUS_DST_ID_BROADCAST		(~0ULL)
/* Flag bit asking the server to report the flags it supports */
#define KDBUS_FLAG_NEGOTIATE		(1ULL << 63)

/* Payload of an ID_ADD / ID_REMOVE notification: a peer's id and flags */
struct kdbus_notify_id_change {
	__u64 id;
	__u64 flags;
} __attribute__((__aligned__(8)));

/* Payload of a name ownership notification: previous and new owner */
struct kdbus_notify_name_change {
	struct kdbus_notify_id_change old_id;
	struct kdbus_notify_id_change new_id;
	char name[0];			/* NUL-terminated bus name */
} __attribute__((__aligned__(8)));

/* User and group ids of a process (real, effective, saved, fs) */
struct kdbus_creds {
	__u64 uid;
	__u64 euid;
	__u64 suid;
	__u64 fsuid;
	__u64 gid;
	__u64 egid;
	__u64 sgid;
	__u64 fsgid;
} __attribute__((__aligned__(8)));

/* Process, thread and parent process ids */
struct kdbus_pids {
	__u64 pid;
	__u64 tid;
	__u64 ppid;
} __attribute__((__aligned__(8)));

/* Capability bitmaps; caps[] holds the sets back to back */
struct kdbus_caps {
	__u32 last_cap;
	__u32 caps[0];
} __attribute__((__aligned__(8)));

/* Audit session and login uid */
struct kdbus_audit {
	__u32 sessionid;
	__u32 loginuid;
} __attribute__((__aligned__(8)));

/* Message sequence number plus clock readings taken at send time */
struct kdbus_timestamp {
	__u64 seqnum;
	__u64 monotonic_ns;
	__u64 realtime_ns;
} __attribute__((__aligned__(8)));

/* One payload chunk: a sender address, or a receiver pool offset */
struct kdbus_vec {
	__u64 size;
	union {
		__u64 address;		/* sender side: user pointer */
		__u64 offset;		/* receiver side: pool offset */
	};
} __attribute__((__aligned__(8)));

/* Bus-wide bloom filter geometry: byte size and number of hashes */
struct kdbus_bloom_parameter {
	__u64 size;
	__u64 n_hash;
} __attribute__((__aligned__(8)));

/* A bloom filter with the generation it was computed for */
struct kdbus_bloom_filter {
	__u64 generation;
	__u64 data[0];
} __attribute__((__aligned__(8)));

/* Payload passed as a range inside a sealed memfd */
struct kdbus_memfd {
	__u64 start;
	__u64 size;
	int fd;
	__u32 __pad;
} __attribute__((__aligned__(8)));

/* A bus name together with its flags */
struct kdbus_name {
	__u64 flags;
	char name[0];			/* NUL-terminated */
} __attribute__((__aligned__(8)));

/* Who a policy entry applies to */
enum kdbus_policy_access_type {
	_KDBUS_POLICY_ACCESS_NULL,
	KDBUS_POLICY_ACCESS_USER,
	KDBUS_POLICY_ACCESS_GROUP,
	KDBUS_POLICY_ACCESS_WORLD,
};

/* What a policy entry grants; each level implies the ones below it */
enum kdbus_policy_type {
	KDBUS_POLICY_SEE	= 0,
	KDBUS_POLICY_TALK,
	KDBUS_POLICY_OWN,
};

/* One policy rule: subject kind, granted level, and uid/gid */
struct kdbus_policy_access {
	__u64 type;			/* enum kdbus_policy_access_type */
	__u64 access;			/* enum kdbus_policy_type */
	__u64 id;			/* uid or gid; unused for WORLD */
} __attribute__((__aligned__(8)));

/* Metadata kinds a peer may request or agree to have attached */
enum kdbus_attach_flags {
	KDBUS_ATTACH_TIMESTAMP		=  1ULL <<  0,
	KDBUS_ATTACH_CREDS		=  1ULL <<  1,
	KDBUS_ATTACH_PIDS		=  1ULL <<  2,
	KDBUS_ATTACH_AUXGROUPS		=  1ULL <<  3,
	KDBUS_ATTACH_NAMES		=  1ULL <<  4,
	KDBUS_ATTACH_TID_COMM		=  1ULL <<  5,
	KDBUS_ATTACH_PID_COMM		=  1ULL <<  6,
	KDBUS_ATTACH_EXE		=  1ULL <<  7,
	KDBUS_ATTACH_CMDLINE		=  1ULL <<  8,
	KDBUS_ATTACH_CGROUP		=  1ULL <<  9,
	KDBUS_ATTACH_CAPS		=  1ULL << 10,
	KDBUS_ATTACH_SECLABEL		=  1ULL << 11,
	KDBUS_ATTACH_AUDIT		=  1ULL << 12,
	KDBUS_ATTACH_CONN_DESCRIPTION	=  1ULL << 13,
	_KDBUS_ATTACH_ALL		=  (1ULL << 14) - 1,
	_KDBUS_ATTACH_ANY		=  ~0ULL
};

/*
 * Item type codes.  Ranges: 0x1.. items supplied by the caller,
 * 0x1000.. metadata (one per attach flag, same order), 0x2000.. policy,
 * 0x8000.. items generated by the bus for notifications.
 */
enum kdbus_item_type {
	_KDBUS_ITEM_NULL,
	_KDBUS_ITEM_USER_BASE,
	KDBUS_ITEM_NEGOTIATE	= _KDBUS_ITEM_USER_BASE,
	KDBUS_ITEM_PAYLOAD_VEC,
	KDBUS_ITEM_PAYLOAD_OFF,
	KDBUS_ITEM_PAYLOAD_MEMFD,
	KDBUS_ITEM_FDS,
	KDBUS_ITEM_CANCEL_FD,
	KDBUS_ITEM_BLOOM_PARAMETER,
	KDBUS_ITEM_BLOOM_FILTER,
	KDBUS_ITEM_BLOOM_MASK,
	KDBUS_ITEM_DST_NAME,
	KDBUS_ITEM_MAKE_NAME,
	KDBUS_ITEM_ATTACH_FLAGS_SEND,
	KDBUS_ITEM_ATTACH_FLAGS_RECV,
	KDBUS_ITEM_ID,
	KDBUS_ITEM_NAME,
	KDBUS_ITEM_DST_ID,

	/* order here mirrors enum kdbus_attach_flags bit by bit */
	_KDBUS_ITEM_ATTACH_BASE	= 0x1000,
	KDBUS_ITEM_TIMESTAMP	= _KDBUS_ITEM_ATTACH_BASE,
	KDBUS_ITEM_CREDS,
	KDBUS_ITEM_PIDS,
	KDBUS_ITEM_AUXGROUPS,
	KDBUS_ITEM_OWNED_NAME,
	KDBUS_ITEM_TID_COMM,
	KDBUS_ITEM_PID_COMM,
	KDBUS_ITEM_EXE,
	KDBUS_ITEM_CMDLINE,
	KDBUS_ITEM_CGROUP,
	KDBUS_ITEM_CAPS,
	KDBUS_ITEM_SECLABEL,
	KDBUS_ITEM_AUDIT,
	KDBUS_ITEM_CONN_DESCRIPTION,

	_KDBUS_ITEM_POLICY_BASE	= 0x2000,
	KDBUS_ITEM_POLICY_ACCESS = _KDBUS_ITEM_POLICY_BASE,

	_KDBUS_ITEM_KERNEL_BASE	= 0x8000,
	KDBUS_ITEM_NAME_ADD	= _KDBUS_ITEM_KERNEL_BASE,
	KDBUS_ITEM_NAME_REMOVE,
	KDBUS_ITEM_NAME_CHANGE,
	KDBUS_ITEM_ID_ADD,
	KDBUS_ITEM_ID_REMOVE,
	KDBUS_ITEM_REPLY_TIMEOUT,
	KDBUS_ITEM_REPLY_DEAD,
};

/* Generic tagged record; size counts header plus payload, unpadded */
struct kdbus_item {
	__u64 size;
	__u64 type;			/* enum kdbus_item_type */
	union {
		__u8 data[0];
		__u32 data32[0];
		__u64 data64[0];
		char str[0];

		__u64 id;
		struct kdbus_vec vec;
		struct kdbus_creds creds;
		struct kdbus_pids pids;
		struct kdbus_audit audit;
		struct kdbus_caps caps;
		struct kdbus_timestamp timestamp;
		struct kdbus_name name;
		struct kdbus_bloom_parameter bloom_parameter;
		struct kdbus_bloom_filter bloom_filter;
		struct kdbus_memfd memfd;
		int fds[0];
		struct kdbus_notify_name_change name_change;
		struct kdbus_notify_id_change id_change;
		struct kdbus_policy_access policy_access;
	};
} __attribute__((__aligned__(8)));

/* Per-message behaviour flags (kdbus_msg.flags) */
enum kdbus_msg_flags {
	KDBUS_MSG_EXPECT_REPLY	= 1ULL << 0,
	KDBUS_MSG_NO_AUTO_START	= 1ULL << 1,
	KDBUS_MSG_SIGNAL	= 1ULL << 2,
};

/* Payload format tags; the D-Bus value spells "DBusDBus" in ASCII */
enum kdbus_payload_type {
	KDBUS_PAYLOAD_KERNEL,
	KDBUS_PAYLOAD_DBUS	= 0x4442757344427573ULL,
};

/* A message: fixed header followed by payload/metadata items */
struct kdbus_msg {
	__u64 size;
	__u64 flags;			/* enum kdbus_msg_flags */
	__s64 priority;			/* lower value is more urgent */
	__u64 dst_id;
	__u64 src_id;
	__u64 payload_type;		/* enum kdbus_payload_type */
	__u64 cookie;
	union {
		__u64 timeout_ns;	/* for calls expecting a reply */
		__u64 cookie_reply;	/* for replies: cookie answered */
	};
	struct kdbus_item items[0];
} __attribute__((__aligned__(8)));

/* Where a delivered message sits in the receiver's pool */
struct kdbus_msg_info {
	__u64 offset;
	__u64 msg_size;
	__u64 return_flags;
} __attribute__((__aligned__(8)));

/* Flags for KDBUS_CMD_SEND */
enum kdbus_send_flags {
	KDBUS_SEND_SYNC_REPLY		= 1ULL << 0,
};

/* Argument of KDBUS_CMD_SEND: message pointer plus sync-reply slot */
struct kdbus_cmd_send {
	__u64 size;
	__u64 flags;			/* enum kdbus_send_flags */
	__u64 return_flags;
	__u64 msg_address;		/* user pointer to struct kdbus_msg */
	struct kdbus_msg_info reply;
	struct kdbus_item items[0];
} __attribute__((__aligned__(8)));

/* Flags for KDBUS_CMD_RECV */
enum kdbus_recv_flags {
	KDBUS_RECV_PEEK		= 1ULL <<  0,
	KDBUS_RECV_DROP		= 1ULL <<  1,
	KDBUS_RECV_USE_PRIORITY	= 1ULL <<  2,
};

/* Conditions reported back by KDBUS_CMD_RECV */
enum kdbus_recv_return_flags {
	KDBUS_RECV_RETURN_INCOMPLETE_FDS	= 1ULL <<  0,
	KDBUS_RECV_RETURN_DROPPED_MSGS		= 1ULL <<  1,
};

/* Argument of KDBUS_CMD_RECV: filter in, location of message out */
struct kdbus_cmd_recv {
	__u64 size;
	__u64 flags;			/* enum kdbus_recv_flags */
	__u64 return_flags;		/* enum kdbus_recv_return_flags */
	__s64 priority;
	__u64 dropped_msgs;
	struct kdbus_msg_info msg;
	struct kdbus_item items[0];
} __attribute__((__aligned__(8)));

/* Argument of KDBUS_CMD_FREE: releases a pool slice by offset */
struct kdbus_cmd_free {
	__u64 size;
	__u64 flags;
	__u64 return_flags;
	__u64 offset;
	struct kdbus_item items[0];
} __attribute__((__aligned__(8)));

/* Connection role and capability flags for KDBUS_CMD_HELLO */
enum kdbus_hello_flags {
	KDBUS_HELLO_ACCEPT_FD		=  1ULL <<  0,
	KDBUS_HELLO_ACTIVATOR		=  1ULL <<  1,
	KDBUS_HELLO_POLICY_HOLDER	=  1ULL <<  2,
	KDBUS_HELLO_MONITOR		=  1ULL <<  3,
};

/* Argument of KDBUS_CMD_HELLO: registers a connection on an endpoint */
struct kdbus_cmd_hello {
	__u64 size;
	__u64 flags;			/* enum kdbus_hello_flags */
	__u64 return_flags;
	__u64 attach_flags_send;	/* enum kdbus_attach_flags */
	__u64 attach_flags_recv;	/* enum kdbus_attach_flags */
	__u64 bus_flags;		/* out */
	__u64 id;			/* out: unique connection id */
	__u64 pool_size;
	__u64 offset;			/* out: bus info in the pool */
	__u64 items_size;		/* out: size of that bus info */
	__u8 id128[16];			/* out: bus 128-bit id */
	struct kdbus_item items[0];
} __attribute__((__aligned__(8)));

/* Record in the pool describing a connection or a bus */
struct kdbus_info {
	__u64 size;
	__u64 id;
	__u64 flags;
	struct kdbus_item items[0];
} __attribute__((__aligned__(8)));

/* Selects which entries KDBUS_CMD_LIST reports */
enum kdbus_list_flags {
	KDBUS_LIST_UNIQUE		= 1ULL <<  0,
	KDBUS_LIST_NAMES		= 1ULL <<  1,
	KDBUS_LIST_ACTIVATORS		= 1ULL <<  2,
	KDBUS_LIST_QUEUED		= 1ULL <<  3,
};

/* Argument of KDBUS_CMD_LIST: result placed in the pool */
struct kdbus_cmd_list {
	__u64 size;
	__u64 flags;			/* enum kdbus_list_flags */
	__u64 return_flags;
	__u64 offset;			/* out */
	__u64 list_size;		/* out */
	struct kdbus_item items[0];
} __attribute__((__aligned__(8)));

/* Argument of CONN_INFO / BUS_CREATOR_INFO: result placed in the pool */
struct kdbus_cmd_info {
	__u64 size;
	__u64 flags;
	__u64 return_flags;
	__u64 id;			/* peer id, or 0 to use a NAME item */
	__u64 attach_flags;		/* enum kdbus_attach_flags */
	__u64 offset;			/* out */
	__u64 info_size;		/* out */
	struct kdbus_item items[0];
} __attribute__((__aligned__(8)));

/* Flags for KDBUS_CMD_MATCH_ADD */
enum kdbus_cmd_match_flags {
	KDBUS_MATCH_REPLACE	= 1ULL <<  0,
};

/* Argument of MATCH_ADD / MATCH_REMOVE: rules grouped by a cookie */
struct kdbus_cmd_match {
	__u64 size;
	__u64 flags;			/* enum kdbus_cmd_match_flags */
	__u64 return_flags;
	__u64 cookie;
	struct kdbus_item items[0];
} __attribute__((__aligned__(8)));

/* Access mode flags for BUS_MAKE / ENDPOINT_MAKE */
enum kdbus_make_flags {
	KDBUS_MAKE_ACCESS_GROUP		= 1ULL <<  0,
	KDBUS_MAKE_ACCESS_WORLD		= 1ULL <<  1,
};

/* Flags for name acquisition and for names reported by LIST */
enum kdbus_name_flags {
	KDBUS_NAME_REPLACE_EXISTING	= 1ULL <<  0,
	KDBUS_NAME_ALLOW_REPLACEMENT	= 1ULL <<  1,
	KDBUS_NAME_QUEUE		= 1ULL <<  2,
	KDBUS_NAME_IN_QUEUE		= 1ULL <<  3,
	KDBUS_NAME_ACTIVATOR		= 1ULL <<  4,
	KDBUS_NAME_PRIMARY		= 1ULL <<  5,
	KDBUS_NAME_ACQUIRED		= 1ULL <<  6,
};

/* Plain command argument: header plus items, used by most commands */
struct kdbus_cmd {
	__u64 size;
	__u64 flags;
	__u64 return_flags;
	struct kdbus_item items[0];
} __attribute__((__aligned__(8)));

/* ioctl request numbers, grouped by the handle type they act on */
enum kdbus_ioctl_type {
	/* on a control handle (0x00-0x0f) */
	KDBUS_CMD_BUS_MAKE =		_IOW(KDBUS_IOCTL_MAGIC, 0x00,
					     struct kdbus_cmd),

	/* on an endpoint handle (0x10-0x1f) */
	KDBUS_CMD_ENDPOINT_MAKE =	_IOW(KDBUS_IOCTL_MAGIC, 0x10,
					     struct kdbus_cmd),
	KDBUS_CMD_ENDPOINT_UPDATE =	_IOW(KDBUS_IOCTL_MAGIC, 0x11,
					     struct kdbus_cmd),

	/* on a connection handle (0x80-0xff) */
	KDBUS_CMD_HELLO =		_IOWR(KDBUS_IOCTL_MAGIC, 0x80,
					      struct kdbus_cmd_hello),
	KDBUS_CMD_UPDATE =		_IOW(KDBUS_IOCTL_MAGIC, 0x81,
					     struct kdbus_cmd),
	KDBUS_CMD_BYEBYE =		_IOW(KDBUS_IOCTL_MAGIC, 0x82,
					     struct kdbus_cmd),
	KDBUS_CMD_FREE =		_IOW(KDBUS_IOCTL_MAGIC, 0x83,
					     struct kdbus_cmd_free),
	KDBUS_CMD_CONN_INFO =		_IOR(KDBUS_IOCTL_MAGIC, 0x84,
					     struct kdbus_cmd_info),
	KDBUS_CMD_BUS_CREATOR_INFO =	_IOR(KDBUS_IOCTL_MAGIC, 0x85,
					     struct kdbus_cmd_info),
	KDBUS_CMD_LIST =		_IOR(KDBUS_IOCTL_MAGIC, 0x86,
					     struct kdbus_cmd_list),

	KDBUS_CMD_SEND =		_IOW(KDBUS_IOCTL_MAGIC, 0x90,
					     struct kdbus_cmd_send),
	KDBUS_CMD_RECV =		_IOR(KDBUS_IOCTL_MAGIC, 0x91,
					     struct kdbus_cmd_recv),

	KDBUS_CMD_NAME_ACQUIRE =	_IOW(KDBUS_IOCTL_MAGIC, 0xa0,
					     struct kdbus_cmd),
	KDBUS_CMD_NAME_RELEASE =	_IOW(KDBUS_IOCTL_MAGIC, 0xa1,
					     struct kdbus_cmd),

	KDBUS_CMD_MATCH_ADD =		_IOW(KDBUS_IOCTL_MAGIC, 0xb0,
					     struct kdbus_cmd_match),
	KDBUS_CMD_MATCH_REMOVE =	_IOW(KDBUS_IOCTL_MAGIC, 0xb1,
					     struct kdbus_cmd_match),
};

/* ======================================================================
 * Part 2: kdbusfs conveniences -- NOT part of the kernel ABI
 *
 * Small helpers for building and walking item lists.  They only do
 * pointer arithmetic on the structures above and never talk to kdbusfs.
 * ====================================================================== */

#include <stddef.h>

/* Round x up to the next multiple of 8 (items are 8-byte aligned) */
#define KDBUS_ALIGN8(x)		(((x) + 7) & ~7ULL)

/* Bytes taken by an item's size and type fields */
#define KDBUS_ITEM_HEADER_SIZE	offsetof(struct kdbus_item, data)

/* Padded space an item with the given payload size occupies */
#define KDBUS_ITEM_SIZE(payload_size) \
	KDBUS_ALIGN8(KDBUS_ITEM_HEADER_SIZE + (payload_size))

/* The item that follows 'item' in a list (skips the padding) */
#define KDBUS_ITEM_NEXT(item) \
	((__typeof__(item))((__u8 *)(item) + KDBUS_ALIGN8((item)->size)))

/*
 * Iterate 'iter' over the items starting at 'first' that lie within the
 * 'len' bytes beginning at 'first', e.g.
 *	KDBUS_FOREACH(it, msg->items,
 *		      msg->size - offsetof(struct kdbus_msg, items))
 * The loop ends at the end of the region, or early at an item whose
 * size is smaller than a bare header or runs past the region.  'first'
 * and 'len' are evaluated on every step, so keep them side-effect free.
 */
#define KDBUS_FOREACH(iter, first, len)					\
	for ((iter) = (first);						\
	     (const __u8 *)(iter) + KDBUS_ITEM_HEADER_SIZE <=		\
			(const __u8 *)(first) + (len) &&		\
	     (iter)->size >= KDBUS_ITEM_HEADER_SIZE &&			\
	     (const __u8 *)(iter) + (iter)->size <=			\
			(const __u8 *)(first) + (len);			\
	     (iter) = KDBUS_ITEM_NEXT(iter))

#endif /* KDBUSFS_KDBUS_H */
