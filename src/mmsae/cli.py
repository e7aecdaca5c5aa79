"""The `mmsae` command: each sub-command is a thin shell over one package's Python API."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)

# Sub-apps and commands are registered below; each lives next to the package it drives.
