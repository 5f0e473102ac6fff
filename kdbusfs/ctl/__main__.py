"""`python -m kdbusfs.ctl`: the kdbusctl command."""

from .cli import main

raise SystemExit(main())
