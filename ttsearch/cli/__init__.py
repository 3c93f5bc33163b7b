"""The command line: `ttsearch run | experiment | demo | report | export | fit-policy`."""

from ttsearch.cli.app import main

__all__ = ["main"]
