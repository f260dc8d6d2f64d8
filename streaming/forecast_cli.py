"""`recast forecast ...` subcommands (registered by recast/cli.py)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the forecasting subcommands; commands import their modules lazily."""
