"""The command line: ``gem-sam`` and its subcommands, each a thin layer over the library."""

from .main import COMMANDS, main

__all__ = ["COMMANDS", "main"]
