"""One table, four renderings: the cells are built once and written to rich, Markdown, JSON or CSV."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.markup import escape
from rich.table import Table


def md_escape(text: str) -> str:
    return str(text).replace("|", "\\|")


def json_safe(value: Any) -> Any:
    """``value`` with every NaN or infinity replaced by None (JSON has no such numbers), in nested
    dicts, lists and tuples too."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def strict_json(value: Any) -> str:
    """JSON any parser reads: NaN and infinities (a diverged run's loss) become null."""
    return json.dumps(json_safe(value), indent=2, ensure_ascii=False, allow_nan=False, default=str)


@dataclass
class CellTable:
    """A titled table of string cells. ``right`` names the columns aligned right; ``styles`` maps a
    (row, column) to a rich style for the terminal; ``code`` names columns written as code in Markdown."""

    title: str
    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)
    right: Sequence[int] = ()
    styles: dict[tuple[int, int], str] = field(default_factory=dict)
    row_styles: dict[int, str] = field(default_factory=dict)
    code: Sequence[int] = ()

    def add(self, *cells: object, style: str | None = None) -> None:
        if style:
            self.row_styles[len(self.rows)] = style
        self.rows.append([str(c) for c in cells])

    def select(self, columns: Sequence[int], title: str | None = None) -> CellTable:
        """The same table with only ``columns`` (in that order), styles and alignment carried over."""
        where = {old: new for new, old in enumerate(columns)}
        return CellTable(title if title is not None else self.title, [self.headers[i] for i in columns],
                         [[row[i] for i in columns] for row in self.rows],
                         right=[where[i] for i in self.right if i in where],
                         styles={(r, where[c]): s for (r, c), s in self.styles.items() if c in where},
                         row_styles=dict(self.row_styles), code=[where[i] for i in self.code if i in where])

    def to_rich(self, no_wrap: Sequence[int] = (0,)) -> Table:
        table = Table(title=escape(self.title), title_justify="left")
        for i, h in enumerate(self.headers):
            table.add_column(escape(h), justify="right" if i in self.right else "left", no_wrap=i in no_wrap)
        for r, cells in enumerate(self.rows):
            shown = []
            for c, text in enumerate(cells):
                style = self.styles.get((r, c))
                shown.append(f"[{style}]{escape(text)}[/]" if style else escape(text))
            table.add_row(*shown, style=self.row_styles.get(r))
        return table

    def to_markdown(self) -> str:
        lines = ["| " + " | ".join(md_escape(h) for h in self.headers) + " |",
                 "|" + "|".join("---:" if i in self.right else ":---" for i in range(len(self.headers))) + "|"]
        for cells in self.rows:
            shown = [f"`{md_escape(t)}`" if i in self.code and t else md_escape(t) for i, t in enumerate(cells)]
            lines.append("| " + " | ".join(shown) + " |")
        return "\n".join(lines)

    def to_records(self) -> list[dict[str, str]]:
        return [dict(zip(self.headers, cells)) for cells in self.rows]

    def to_json(self) -> str:
        return strict_json({"title": self.title, "rows": self.to_records()})

    def to_csv(self) -> str:
        """The header row and the rows, comma-separated (RFC 4180 quoting); the title is left out."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(self.headers)
        writer.writerows(self.rows)
        return buffer.getvalue()
