"""The `kdbusctl` command line: options, verbs, and failures reported as one line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import __version__
from ..abi.constants import ATTACH_ALL
from ..client import CommandError, Connection
from .calls import block_stop_signals, call, emit, hold_bus, wait_for_stop_signal
from .display import reply_text
from .matching import parse_match
from .peers import connection_info, list_rows, status_of_bus, status_of_connection, table
from .stats import show as show_stats
from .target import CtlError, connect, domain_root, find_bus
from .watch import pcap_writer, text_printer, watch

DESCRIPTION = "Look at a kdbus bus: list, status, monitor, capture, call, emit, stats, make-bus."


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        # One line, not argparse's usage block: the brief form scripts and users can read.
        sys.stderr.write(f"{self.prog}: {message} (see {self.prog} --help)\n")
        raise SystemExit(2)


@dataclass(frozen=True, slots=True)
class Where:
    """The options that choose the bus."""

    bus: str | None
    root: str | None
    system: bool
    user: bool

    def endpoint(self) -> Path:
        if sum((self.bus is not None, self.system, self.user)) > 1:
            raise CtlError("choose the bus with one of --bus, --system and --user")
        return find_bus(self.bus, self.root, self.system, self.user)


def _common() -> _Parser:
    # Defaults are suppressed so that options given before the verb survive the verb's parser.
    common = _Parser(add_help=False)
    common.add_argument("--bus", metavar="PATH|NAME", default=argparse.SUPPRESS,
                        help="the bus: a bus file or directory, or a bus name in the domain (--root)")
    common.add_argument("--root", metavar="DIR", default=argparse.SUPPRESS,
                        help="the kdbus domain (mount) that bus names are looked up in "
                        "(default /sys/fs/kdbus, else ~/kdbus)")
    common.add_argument("--system", action="store_true", default=argparse.SUPPRESS,
                        help="the system bus, /sys/fs/kdbus/0-system/bus")
    common.add_argument("--user", action="store_true", default=argparse.SUPPRESS,
                        help="the user's bus, ~/kdbus/UID-user/bus")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print JSON (monitor: one object per line)")
    return common


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = _Parser(prog="kdbusctl", description=DESCRIPTION, parents=[common])
    parser.add_argument("--version", action="version", version=f"kdbusctl (kdbusfs) {__version__}")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB", parser_class=_Parser)

    listing = verbs.add_parser("list", parents=[common], help="connections and names on the bus")
    listing.add_argument("--unique", action="store_true", help="only unique names (:1.N)")
    listing.add_argument("--acquired", action="store_true", help="only well-known names owned or queued for")
    listing.add_argument("--activatable", action="store_true", help="only names held by activators alone")
    listing.add_argument("--no-legend", action="store_true", help="no column headings")

    status = verbs.add_parser("status", parents=[common],
                              help="a connection's metadata, or the bus creator's")
    status.add_argument("target", nargs="?", metavar="NAME|ID", help="well-known name, :1.N or N")

    for verb, text in (("monitor", "print every message on the bus"),
                       ("capture", "write every message on the bus as pcapng to stdout")):
        watching = verbs.add_parser(verb, parents=[common], help=text)
        watching.add_argument("matches", nargs="*", default=[], metavar="MATCH",
                              help="a match rule (type='signal',member='X') or a bus name")
        watching.add_argument("--num-matches", type=int, metavar="N", help="stop after N messages")

    calling = verbs.add_parser("call", parents=[common], help="call a method and print the reply")
    calling.add_argument("destination", metavar="DESTINATION")
    calling.add_argument("path", metavar="OBJECT")
    calling.add_argument("interface", metavar="INTERFACE")
    calling.add_argument("member", metavar="METHOD")
    calling.add_argument("arguments", nargs="*", default=[], metavar="ARGUMENT",
                         help="the body's signature, then its values (see kdbusctl(1))")
    calling.add_argument("--expect-reply", action=argparse.BooleanOptionalAction, default=True,
                         help="wait for the reply (default) or send and return")
    calling.add_argument("--auto-start", action=argparse.BooleanOptionalAction, default=True,
                         help="let the call reach an activator (default)")
    calling.add_argument("--timeout", type=float, default=25.0, metavar="SECONDS",
                         help="how long to wait for the reply (default 25)")

    emitting = verbs.add_parser("emit", parents=[common], help="emit a signal")
    emitting.add_argument("path", metavar="OBJECT")
    emitting.add_argument("interface", metavar="INTERFACE")
    emitting.add_argument("member", metavar="MEMBER")
    emitting.add_argument("arguments", nargs="*", default=[], metavar="ARGUMENT",
                          help="the body's signature, then its values (see kdbusctl(1))")
    emitting.add_argument("--destination", metavar="NAME|ID", help="send to one connection, not to all")

    statistics = verbs.add_parser("stats", parents=[common],
                                  help="the bus's statistics (its owner's and root's to read)")
    statistics.add_argument("--watch", type=float, nargs="?", const=1.0, metavar="SECONDS",
                            help="print them again every SECONDS (1 by default) until interrupted")

    making = verbs.add_parser("make-bus", parents=[common],
                              help="make a bus and keep it until interrupted")
    making.add_argument("name", metavar="NAME", help='the bus name ("UID-" is prefixed when missing)')
    access = making.add_mutually_exclusive_group()
    access.add_argument("--world", action="store_true", help="let every user connect")
    access.add_argument("--group", action="store_true", help="let the creator's group connect")
    return parser


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


def _watch(args: argparse.Namespace, where: Where, as_json: bool) -> int:
    if as_json and args.verb == "capture":
        raise CtlError("capture writes pcapng; --json applies to monitor")
    if args.num_matches is not None and args.num_matches < 1:
        raise CtlError("--num-matches wants a positive number")
    matches = [parse_match(text) for text in args.matches]
    endpoint = where.endpoint()
    show = pcap_writer(sys.stdout.buffer, endpoint) if args.verb == "capture" else \
        text_printer(sys.stdout, as_json)
    return watch(endpoint, matches, args.num_matches, show)


def _make_bus(args: argparse.Namespace, where: Where, as_json: bool) -> int:
    root = domain_root(where.root)
    block_stop_signals()
    with hold_bus(root, args.name, world=args.world, group=args.group) as bus:
        if as_json:
            _print_json({"bus": bus.name, "endpoint": str(bus.endpoint)})
        else:
            print(bus.endpoint)
        sys.stdout.flush()
        wait_for_stop_signal()
    return 0


def _list(args: argparse.Namespace, conn: Connection, endpoint: Path, as_json: bool) -> None:
    rows = list_rows(conn, unique=args.unique, acquired=args.acquired, activatable=args.activatable)
    if as_json:
        _print_json([row.json() for row in rows])
    else:
        for line in table([row.cells() for row in rows], legend=not args.no_legend):
            print(line)


def _status(args: argparse.Namespace, conn: Connection, endpoint: Path, as_json: bool) -> None:
    pairs, record = (status_of_connection(connection_info(conn, args.target)) if args.target
                     else status_of_bus(conn, conn.bus_creator_info(ATTACH_ALL), str(endpoint)))
    if as_json:
        _print_json(record)
    else:
        for key, value in pairs:
            print(f"{key}={value}")


def _call(args: argparse.Namespace, conn: Connection, endpoint: Path, as_json: bool) -> None:
    if not args.timeout > 0:
        raise CtlError("--timeout wants a positive number of seconds")
    payload = call(conn, args.destination, args.path, args.interface, args.member, args.arguments,
                   expect_reply=args.expect_reply, auto_start=args.auto_start, timeout=args.timeout)
    if payload is not None:
        text, record = reply_text(payload)
        if as_json:
            _print_json(record)
        elif text:
            print(text)


def _emit(args: argparse.Namespace, conn: Connection, endpoint: Path, as_json: bool) -> None:
    emit(conn, args.path, args.interface, args.member, args.arguments, target=args.destination)


# The verbs that work through an ordinary connection to the bus.
_CONNECTED = {"list": _list, "status": _status, "call": _call, "emit": _emit}


def _run(args: argparse.Namespace, where: Where, as_json: bool) -> int:
    if args.verb in ("monitor", "capture"):
        return _watch(args, where, as_json)
    if args.verb == "make-bus":
        return _make_bus(args, where, as_json)
    if args.verb == "stats":
        if args.watch is not None and not args.watch > 0:
            raise CtlError("--watch wants a positive number of seconds")
        return show_stats(where.endpoint(), as_json, args.watch)
    endpoint = where.endpoint()
    with connect(endpoint) as conn:
        _CONNECTED[args.verb](args, conn, endpoint, as_json)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    where = Where(getattr(args, "bus", None), getattr(args, "root", None), getattr(args, "system", False),
                  getattr(args, "user", False))
    try:
        return _run(args, where, getattr(args, "json", False))
    except BrokenPipeError:
        # The reader went away (`kdbusctl monitor | head`): stop quietly, and keep Python's final
        # flush of stdout from complaining too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        return 130
    except (CtlError, CommandError, ValueError) as exc:
        message = str(exc)
    except OSError as exc:
        message = f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc.strerror or exc)
    print(f"kdbusctl: {message}", file=sys.stderr)
    return 1
