"""Allows `python -m forwarder` wherever the console script is not on PATH."""

from forwarder.cli import main

raise SystemExit(main())
