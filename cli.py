"""The `stanhop` command line: click commands only.

Each command parses its options, calls the library, prints, and maps errors to exit codes:
a user's mistake (stanhop.errors.UserError) is one line on stderr and exit 2; an internal
error is a short message and exit 1; `--debug` shows the traceback. Heavy modules (torch,
lightning, pandas) are imported inside the commands so that `stanhop --help` stays fast.
"""

from __future__ import annotations

import json
import sys
import traceback

import click

from stanhop import __version__
from stanhop.errors import UserError

CONTEXT = {"show_default": True, "help_option_names": ["-h", "--help"], "max_content_width": 100}


class StanhopGroup(click.Group):
    """A click group that turns exceptions into one-line messages and exit codes."""

    def invoke(self, ctx: click.Context):
        debug = ctx.params.get("debug", False) or ctx.obj == "debug"
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except UserError as err:
            if debug:
                traceback.print_exc()
            click.echo(f"error: {err}", err=True)
            ctx.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)
        except Exception as err:  # an internal error: short unless --debug
            if debug:
                traceback.print_exc()
            else:
                click.echo(f"internal error: {type(err).__name__}: {err} (rerun with --debug for the traceback)", err=True)
            ctx.exit(1)


@click.group(cls=StanhopGroup, context_settings=CONTEXT, epilog="Example: stanhop train --config configs/quick.yaml")
@click.version_option(__version__, prog_name="stanhop")
@click.option("--debug", is_flag=True, help="Show tracebacks of errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """stanhop: forecast time series with STanHop-Net (sparse tandem Hopfield networks)."""
    ctx.obj = "debug" if debug else None


# ---------------------------------------------------------------- data


@cli.group(cls=StanhopGroup, context_settings=CONTEXT)
def data() -> None:
    """Inspect data sets (ETTh1 or any CSV)."""


@data.command("describe", context_settings=CONTEXT, epilog="Example: stanhop data describe ETTh1 --split 12/4/4 --json")
@click.argument("name_or_csv")
@click.option("--split", default="14/5/5", help="Months (14/5/5, 12/4/4) or fractions (0.7/0.1/0.2).")
@click.option("--in-len", default=168, type=int, help="Input window length.")
@click.option("--out-len", default=24, type=int, help="Forecast horizon.")
@click.option("--date-column", default="date", help="Column holding the timestamps.")
@click.option("--columns", default=None, help="Comma-separated channels to use (default: all numeric).")
@click.option("--fill", type=click.Choice(["ffill", "interpolate"]), default=None, help="Fill missing cells instead of rejecting them.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def data_describe(name_or_csv, split, in_len, out_len, date_column, columns, fill, as_json) -> None:
    """Rows, columns, frequency, date range, missing values and split of a data set."""
    from stanhop.splits import describe  # pandas only: no torch or lightning to import

    info = describe(
        name_or_csv, split=split, in_len=in_len, out_len=out_len, date_column=date_column,
        columns=_split_list(columns), fill=fill,
    )
    if as_json:
        click.echo(json.dumps(info))
        return
    click.echo(f"data      {info['name']}")
    click.echo(f"rows      {info['rows']}")
    click.echo(f"columns   {', '.join(info['columns'])}")
    click.echo(f"freq      {info['freq']}")
    click.echo(f"dates     {info['start']} .. {info['end']}")
    by_column = ", ".join(f"{k} {v}" for k, v in info["missing_by_column"].items() if v)
    click.echo(f"missing   {info['missing']}" + (f" ({by_column}; before --fill)" if by_column else ""))
    click.echo(f"split     {info['split_spec']} (in_len {in_len}, out_len {out_len})")
    for part, s in info["split"].items():
        click.echo(f"  {part:<6} rows [{s['start']}, {s['end']})  {s['rows']} rows  {s['windows']} windows")


def _split_list(text: str | None) -> list[str] | None:
    if text is None:
        return None
    items = [item.strip() for item in text.split(",") if item.strip()]
    return items or None


def main() -> None:
    cli(prog_name="stanhop")


if __name__ == "__main__":
    sys.exit(main())
