"""The tables of the `ctdna` commands, in three formats: `table` for a person at a terminal,
`tsv` for a log or a pipeline (the default when stdout is not a terminal), `json` for a
program. No format ever truncates an identifier, a date, a number or a reason: a table too
wide for the terminal is printed as one block per row instead."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from services.reports.numbers import percent

Format = Literal["table", "tsv", "json"]
FORMATS: tuple[Format, ...] = ("table", "tsv", "json")

FormatOption = Annotated[
    str | None,
    typer.Option(
        "--format",
        help="table | tsv | json (default: table on a terminal, tsv when the output is piped)",
        show_default=False,
    ),
]

# What a text column may be narrowed to before the table gives way to one block per row:
# below this a reason wraps about a word per line.
TEXT_MIN_WIDTH = 16


BADGES = {
    # a patient's status (schemas.analyses.MrdPatientStatus)
    "positive": ("POSITIVE", "bold white on red"),
    "positive_unconfirmed": ("POSITIVE, UNCONFIRMED", "bold white on dark_orange"),
    "negative": ("NEGATIVE", "bold white on green"),
    "indeterminate": ("INDETERMINATE", "bold black on yellow"),
    "not_applicable": ("n/a", "dim"),
    # the call of one draw
    "POSITIVE": ("POSITIVE", "bold white on red"),
    "NEGATIVE": ("NEGATIVE", "bold white on green"),
    "INDETERMINATE": ("INDETERMINATE", "bold black on yellow"),
}


@dataclass(frozen=True, slots=True)
class Column:
    key: str  # the row's key, and the TSV / JSON name
    header: str  # the table heading
    # "text" wraps at word boundaries; every other kind is never wrapped nor cut. In the
    # table a "badge" is a coloured status and a "fraction" a percentage; TSV and JSON keep
    # the raw value.
    kind: Literal["id", "text", "number", "date", "badge", "fraction"] = "id"
    table: bool = True  # shown in the table
    machine: bool = True  # written in TSV and JSON


def badge(status: str | None) -> Text:
    label, style = BADGES.get(status or "not_applicable", (status or "n/a", ""))
    return Text(f" {label} ", style=style)


def resolve(fmt: str | None, console: Console) -> Format:
    """The format asked for, or the default for where stdout goes."""
    if fmt is None:
        return "table" if console.is_terminal else "tsv"
    if fmt not in FORMATS:
        raise typer.BadParameter(
            f"{fmt!r} is not one of {', '.join(FORMATS)}", param_hint="--format"
        )
    return fmt


def plain(value: Any) -> str:
    """A cell as text: None is empty, a Text loses its style, tabs and newlines become
    spaces (one row per line in TSV)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = value.plain if isinstance(value, Text) else str(value)
    return " ".join(text.split()) if ("\t" in text or "\n" in text) else text


def tsv(columns: Sequence[Column], rows: Sequence[dict[str, Any]]) -> str:
    columns = [c for c in columns if c.machine]
    lines = ["\t".join(c.key for c in columns)]
    lines += ["\t".join(plain(row.get(c.key)) for c in columns) for row in rows]
    return "\n".join(lines) + "\n"


def json_value(value: Any) -> Any:
    return value.plain if isinstance(value, Text) else value


def table(
    console: Console,
    columns: Sequence[Column],
    rows: Sequence[dict[str, Any]],
    *,
    title: str | None = None,
    header_style: str = "bold",
) -> None:
    """A rich table when it fits the console's width with every identifier whole and every
    text column at least TEXT_MIN_WIDTH wide; otherwise one block of `header: value` lines
    per row (readable at 80 columns, nothing cut)."""
    columns = [c for c in columns if c.table]
    cells = [{c.key: _cell(r.get(c.key), c) for c in columns} for r in rows]
    widths = {c.key: max([len(c.header), *(len(plain(r[c.key])) for r in cells)]) for c in columns}
    needed = sum(
        min(widths[c.key], TEXT_MIN_WIDTH) if c.kind == "text" else widths[c.key] for c in columns
    )
    needed += 3 * len(columns) + 1  # borders and one space of padding each side
    if needed > console.width:
        _blocks(console, columns, cells, title=title)
        return
    grid = Table(title=title, header_style=header_style)
    for column in columns:
        if column.kind == "text":
            grid.add_column(
                column.header, overflow="fold", min_width=min(widths[column.key], TEXT_MIN_WIDTH)
            )
        else:
            grid.add_column(
                column.header,
                no_wrap=True,
                min_width=widths[column.key],
                justify="right" if column.kind == "number" else "left",
            )
    for row in cells:
        grid.add_row(*(row[c.key] for c in columns))
    console.print(grid)


def _cell(value: Any, column: Column) -> Text | str:
    if column.kind == "badge":
        return badge(value)
    if column.kind == "fraction" and isinstance(value, int | float):
        return percent(value)
    return value if isinstance(value, Text) else plain(value)


def _blocks(
    console: Console,
    columns: Sequence[Column],
    rows: Sequence[dict[str, Any]],
    *,
    title: str | None,
) -> None:
    """One block per row, `header: value` lines; a long value wraps under itself."""
    if title:
        console.print(Text(title, style="bold"))
    for row in rows:
        block = Table.grid(padding=(0, 1))
        block.add_column(style="dim", no_wrap=True)
        block.add_column()
        for column in columns:
            value = row[column.key]
            if isinstance(value, Text):
                value = value.copy()
                value.plain = value.plain.strip()  # a badge's padding
            block.add_row(f"{column.header}:", value)
        console.print()
        console.print(block)


def emit(
    console: Console,
    fmt: Format,
    columns: Sequence[Column],
    rows: Sequence[dict[str, Any]],
    *,
    title: str | None = None,
) -> None:
    """One table in the chosen format."""
    if fmt == "json":
        payload = [{c.key: json_value(r.get(c.key)) for c in columns if c.machine} for r in rows]
        sys.stdout.write(json.dumps(payload, indent=2, default=str, ensure_ascii=False) + "\n")
    elif fmt == "tsv":
        sys.stdout.write(tsv(columns, rows))
    else:
        table(console, columns, rows, title=title)
    sys.stdout.flush()
