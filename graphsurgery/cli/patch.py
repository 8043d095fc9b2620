"""Commands that read and patch models: apply, inspect, schema, steps."""

from __future__ import annotations

import inspect
import json
import types
import typing
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from graphsurgery.cli.options import apply_force_option, existing_file, json_flag, output_file, upgrade_opset_option
from graphsurgery.cli.tables import print_table, shown
from graphsurgery.errors import printable_json
from graphsurgery.registry import steps_for


@click.command("apply")
@click.argument("recipe", type=existing_file)
@click.argument("model", type=existing_file)
@click.option("-o", "--output", type=output_file, help="Output path [default: <model>.patched.onnx].")
@apply_force_option
@click.option("--dry-run", is_flag=True, help="Print the plan (tensors, nodes, new signature); write nothing.")
@upgrade_opset_option
@json_flag
def apply_command(recipe: Path, model: Path, output: Path | None, force: bool, dry_run: bool, upgrade_opset: bool,
                  as_json: bool):
    """Splice RECIPE's steps into MODEL and write the patched model."""
    from graphsurgery.api import apply

    result = apply(recipe, model, output, force=force, dry_run=dry_run, upgrade_opset=upgrade_opset)
    plan = result.plan
    if as_json:
        click.echo(printable_json({**plan.to_dict(), "written": [str(p) for p in result.written or []]}, indent=2))
        return
    console = Console()
    console.print(Text.assemble("recipe ", shown(plan.recipe, "bold"), shown(f" on {model} (opset {plan.opset})")))

    def say(line: str) -> None:  # names and dims are model text
        console.print(shown(line), highlight=False, soft_wrap=True)

    if plan.input_target:
        say(f"  input  {plan.input_target!r} patched")
    if plan.output_target:
        say(f"  output {plan.output_target!r} patched")
        say(f"  outputs added: {', '.join(plan.outputs_added) or 'none'}; kept unchanged: "
            f"{', '.join(plan.outputs_kept) or 'none'}; removed: {', '.join(plan.outputs_removed) or 'none'}")
    say(f"  {len(plan.nodes)} nodes added")
    if dry_run:
        for name in plan.nodes:
            say(f"    {name}")
    for sig in plan.inputs:
        say(f"  in   {sig}")
    for sig in plan.outputs:
        say(f"  out  {sig}")
    for note in plan.notes:
        say(f"note: {note}")
    if result.output:
        say(f"wrote {', '.join(map(str, result.written))}")
    else:
        say("dry run: nothing written")


#: Inputs and outputs shown per kind: rich took minutes to lay out a table of a model's 100,000 outputs
INSPECT_ROWS = 100


@click.command("inspect")
@click.argument("model", type=existing_file)
@json_flag
def inspect_command(model: Path, as_json: bool):
    """Show a model's inputs, outputs, opset, IR version, node counts, provenance and what it does to its own input
    (own_input_steps: what a recipe's input steps must not do again)."""
    from graphsurgery.api import inspect_model

    info = inspect_model(model)
    if as_json:
        click.echo(json.dumps(info.to_dict(), indent=2))
        return
    console = Console()
    console.print(Text.assemble(shown(info.path, "bold"), f"  IR {info.ir_version}  opset {info.opset}  "
                                f"{info.nodes} nodes  producer ", shown(info.producer or "?")))
    table = Table("", "name", "dtype", "shape")
    for kind, values in (("input", info.inputs), ("output", info.outputs)):
        for value in values[:INSPECT_ROWS]:
            table.add_row(kind, shown(value["name"]), value["dtype"], shown(value["shape"]))
        if len(values) > INSPECT_ROWS:
            table.add_row(kind, f"… {len(values) - INSPECT_ROWS:,} more {kind}s (--json lists them all)", "", "")
    print_table(console, table)
    console.print(shown("ops: " + ", ".join(f"{op}×{n}" for op, n in info.op_types.items())))
    if info.external_data:
        console.print(f"{info.external_data} tensors keep their data in external files")
    for name, own in info.own_input_steps.items():
        console.print(shown(f"input {name!r} is prepared inside the model: {', '.join(own)} — a recipe's input "
                            "steps must not do it again"), highlight=False, soft_wrap=True)
    for entry in info.provenance:  # written by hand or by another tool, a claim may lack any field ("by None")
        tool, recipe, sha, model = (entry.get(key) for key in ("tool", "recipe", "recipe_sha256", "model_sha256"))
        console.print(shown(f"patched by {tool or 'an unnamed tool'} with recipe {recipe or '(unnamed)'} "
                            f"({f'sha256 {str(sha)[:12]}…' if sha else 'no sha256 recorded'})"
                            + (f" from a model of sha256 {str(model)[:12]}…" if model else "")))


@click.command("schema")
def schema_command():
    """Print the JSON Schema of recipes (for editors and validators)."""
    from graphsurgery.recipe import recipe_json_schema

    click.echo(json.dumps(recipe_json_schema(), indent=2))


@click.command("steps")
@click.argument("name", required=False)
def steps_command(name: str | None):
    """List the steps a recipe can use, or document one step fully."""
    from graphsurgery.steps.base import UNDOCUMENTED

    console = Console()
    everything = {**steps_for("input"), **steps_for("output")}
    if name is not None:  # `steps ''` listed every step
        if name not in everything:
            from graphsurgery.errors import GraphsurgeryError
            from graphsurgery.registry import closest

            hint = closest(name, list(everything))
            raise GraphsurgeryError(
                f"unknown step {name!r}",
                fix=f"did you mean {hint[0]!r}?" if hint else "run `graphsurgery steps` for the list",
            )
        cls = everything[name]
        console.print(f"[bold]{name}[/] ({cls.side} step, opset ≥ {cls.min_opset})")
        # as written: the docstring's own line breaks, never re-wrapped mid-sentence by the terminal width
        console.print(inspect.cleandoc(cls.__doc__ or UNDOCUMENTED), highlight=False, markup=False, soft_wrap=True)
        if cls.model_fields:
            console.print("\nParameters:")
        for field_name, field in cls.model_fields.items():
            default = "required" if field.is_required() else f"default {field.default!r}"
            described = f" — {field.description}" if field.description else ""
            console.print(f"  {field_name}: {_type_name(field.annotation)} ({default}){described}",
                          highlight=False, markup=False, soft_wrap=True)
        return
    for side in ("input", "output"):
        table = Table("step", "what it does", title=f"{side} steps", title_justify="left")
        for step_name, cls in sorted(steps_for(side).items()):
            table.add_row(step_name, Text(cls.summary()))  # as written: "[height, width]" is no markup
        console.print(table)


def _type_name(annotation) -> str:
    """`exact | argmax` for a Literal, `int` for a class, `tuple[int, ...]` for a container of constrained items (the
    constraint's pydantic repr, `Annotated[int, FieldInfo(…)]`, is no type a recipe author can read), the annotation's
    text otherwise."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return " | ".join(map(str, args))
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin in (tuple, list) and args:
        return f"{origin.__name__}[{', '.join('...' if a is Ellipsis else _type_name(a) for a in args)}]"
    if origin in (types.UnionType, typing.Union):
        return " | ".join(_type_name(a) for a in args)
    if annotation is type(None):
        return "None"
    return annotation.__name__ if isinstance(annotation, type) else str(annotation).replace("typing.", "")


COMMANDS = (apply_command, inspect_command, schema_command, steps_command)
