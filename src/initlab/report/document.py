"""The report's content as a list of blocks, rendered to Markdown (GitHub) and to one
self-contained HTML file (figures inlined as base64 PNG)."""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Text:
    markdown: str  # paragraphs; **bold**, `code` and [links](url) are rendered in HTML too


@dataclass
class Table:
    frame: pd.DataFrame
    index: bool = True


@dataclass
class Figure:
    path: str  # relative to the report's folder
    caption: str


Block = Heading | Text | Table | Figure


def _cell(value) -> str:
    if isinstance(value, float):
        return "" if pd.isna(value) else f"{value:.4g}"
    return str(value)


def to_markdown(blocks: list[Block]) -> str:
    out = []
    for block in blocks:
        if isinstance(block, Heading):
            out.append("#" * block.level + " " + block.text)
        elif isinstance(block, Text):
            out.append(block.markdown.strip())
        elif isinstance(block, Table):
            frame = block.frame.reset_index() if block.index else block.frame
            header = [str(c) for c in frame.columns]
            rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            rows += ["| " + " | ".join(_cell(v).replace("|", "\\|") for v in row) + " |"
                     for row in frame.itertuples(index=False)]
            out.append("\n".join(rows))
        elif isinstance(block, Figure):
            out.append(f"![{block.caption}]({block.path})\n\n*{block.caption}*")
    return "\n\n".join(out) + "\n"


def _inline_html(markdown: str) -> str:
    text = html.escape(markdown)
    text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
    text = re.sub(r"`(.+?)`", r"<code>\1</code>", text)
    return re.sub(r"\[(.+?)\]\((.+?)\)", r'<a href="\2">\1</a>', text)


def to_html(blocks: list[Block], title: str, folder: Path) -> str:
    body = []
    for block in blocks:
        if isinstance(block, Heading):
            body.append(f"<h{block.level}>{html.escape(block.text)}</h{block.level}>")
        elif isinstance(block, Text):
            for paragraph in block.markdown.strip().split("\n\n"):
                lines = paragraph.splitlines()
                if all(line.startswith("- ") for line in lines):
                    items = "".join(f"<li>{_inline_html(line[2:])}</li>" for line in lines)
                    body.append(f"<ul>{items}</ul>")
                else:
                    body.append(f"<p>{_inline_html(paragraph)}</p>")
        elif isinstance(block, Table):
            frame = block.frame.reset_index() if block.index else block.frame
            body.append(frame.map(_cell).to_html(index=False, escape=True))
        elif isinstance(block, Figure):
            data = base64.b64encode((folder / block.path).read_bytes()).decode()
            body.append(f'<figure><img src="data:image/png;base64,{data}" '
                        f'alt="{html.escape(block.caption)}"><figcaption>'
                        f"{html.escape(block.caption)}</figcaption></figure>")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;"
             "padding:3px 8px;text-align:right}img{max-width:100%}"
             "figcaption{font-style:italic;color:#555}")
    return (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title><style>{style}</style></head><body>\n" + "\n".join(body)
            + "\n</body></html>\n")
