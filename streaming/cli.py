"""`recast` subcommands of streaming/ (registered by recast/cli.py)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add this area's subcommands; commands import their modules lazily."""
