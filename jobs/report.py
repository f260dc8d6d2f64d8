"""report.md and report.html of a run: the paper's claim, what we measured, whether it held."""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jobs.base import Job, JobContext, Verdict

HELD = {True: "held", False: "did not hold", None: "inconclusive / held in part"}


def render_markdown(job: "Job", verdict: "Verdict", manifest: dict[str, Any], plots: list[Path]) -> str:
    lines = [
        f"# {job.name}: {job.title}",
        "",
        f"**The claim.** {job.claim}",
        "",
        f"**Verdict: the claim {HELD[verdict.held]}.** {verdict.summary}",
        "",
    ]
    if verdict.table_md:
        lines += [verdict.table_md.strip(), ""]
    for plot in plots:
        lines += [f"![{plot.stem}]({plot.name})", ""]
    cmd = " ".join(manifest.get("command") or [])
    lines += [
        "## Run",
        "",
        f"- run: `{manifest.get('job')}/{manifest.get('run_id')}`, preset `{manifest.get('preset')}`, seed {manifest.get('seed')}",
        f"- command: `{cmd}`" if cmd else "- command: (library call)",
        f"- started {manifest.get('started_at')}, {manifest.get('seconds')} s wall, host {manifest.get('host')},"
        f" git {manifest.get('git_revision')}",
        f"- config: `{manifest.get('config')}`",
        "",
    ]
    return "\n".join(lines)


def _inline(text: str) -> str:
    text = html.escape(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


def markdown_to_html(md: str, title: str) -> str:
    """The small markdown subset reports use: headings, paragraphs, bullets, pipe tables, images."""
    out: list[str] = []
    lines = md.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                cells = [c.strip() for c in lines[i].strip().strip("|").split("|")]
                if not all(re.fullmatch(r":?-{2,}:?", c) for c in cells):
                    rows.append(cells)
                i += 1
            out.append("<table>")
            for r, cells in enumerate(rows):
                tag = "th" if r == 0 else "td"
                out.append("<tr>" + "".join(f"<{tag}>{_inline(c)}</{tag}>" for c in cells) + "</tr>")
            out.append("</table>")
            continue
        if m := re.fullmatch(r"(#+) (.*)", line):
            level = len(m.group(1))
            out.append(f"<h{level}>{_inline(m.group(2))}</h{level}>")
        elif m := re.fullmatch(r"!\[(.*?)\]\((.*?)\)", line):
            out.append(f'<p><img src="{html.escape(m.group(2))}" alt="{html.escape(m.group(1))}" style="max-width:100%"></p>')
        elif line.startswith("- "):
            out.append(f"<ul><li>{_inline(line[2:])}</li></ul>")
        elif line.strip():
            out.append(f"<p>{_inline(line)}</p>")
        i += 1
    style = ("body{font-family:sans-serif;max-width:960px;margin:2em auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(out) + "\n</body></html>\n")


def write_report(job: "Job", cfg: Any, results: dict, ctx: "JobContext", manifest: dict[str, Any]) -> "Verdict":
    verdict = job.verdict(cfg, results)
    job.plots(cfg, results, ctx)
    plots = sorted(ctx.run_dir.glob("*.png"))
    md = render_markdown(job, verdict, manifest, plots)
    (ctx.run_dir / "report.md").write_text(md)
    (ctx.run_dir / "report.html").write_text(markdown_to_html(md, f"{job.name}: {job.title}"))
    return verdict
