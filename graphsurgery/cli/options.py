"""Options shared by several commands, defined once."""

from __future__ import annotations

from pathlib import Path

import click

existing_file = click.Path(path_type=Path, dir_okay=True)  # existence is checked by the loaders, with their messages

force_option = click.option("--force", is_flag=True, help="Replace an existing output / apply a recipe again.")
json_flag = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
