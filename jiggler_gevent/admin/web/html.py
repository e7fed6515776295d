"""Safe HTML building for the dashboard: every value is escaped unless it is already `Safe` markup.

Pages are built from literal format strings in this package (trusted) filled with values (untrusted,
escaped). Payload fields never reach the output any other way.
"""

import datetime as dt
import html
import json
import math
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, unquote

# The most of one value a page shows (an argument list, a result, a description, a backtrace...): the rest is
# counted, not rendered, so that no payload or batch, however large, makes a page larger than a few of these.
SHOWN = 20_000
# Unix times a date can show (years 1 to 9999): any other number is shown as it is, not as a date.
EARLIEST = dt.datetime.min.replace(tzinfo=dt.UTC).timestamp()
LATEST = dt.datetime.max.replace(tzinfo=dt.UTC).timestamp()


class Safe(str):
    """A string that is already HTML and must not be escaped again."""


def esc(value: Any) -> Safe:
    """`value` as HTML text: Safe passes through, None is empty, anything else is str() and escaped."""
    if isinstance(value, Safe):
        return value
    if value is None:
        return Safe("")
    return Safe(html.escape(str(value), quote=True))


def render(fmt: str, **values: Any) -> Safe:
    """Fill the trusted `fmt` (str.format syntax) with escaped `values`."""
    return Safe(fmt.format(**{k: esc(v) for k, v in values.items()}))


def join(parts: Iterable[Any], sep: str = "") -> Safe:
    """Escaped parts joined by the trusted `sep`."""
    return Safe(sep.join(esc(p) for p in parts))


def as_json(value: Any, indent: int | None = None, limit: int = SHOWN) -> str:
    """A JSON rendering of a payload value, at most `limit` characters (plain text; escape it when placing it)."""
    try:
        text = json.dumps(value, indent=indent, sort_keys=indent is not None, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return clip(text, limit)


def arguments(args: Any, kwargs: Any) -> str:
    """A job's arguments on one line: args as JSON, then kwargs when it has any (each cut short; plain text)."""
    return as_json(args, limit=300) + (" " + as_json(kwargs, limit=200) if kwargs else "")


def job_label(display_name: Any, name: Any) -> Safe:
    """A job's name in bold: the job a wrapper runs (display_name) with the wrapper's name in a tag beside it, or the
    name alone when no wrapper runs it."""
    shown = render("<b>{name}</b>", name=clip(display_name, 200) or "(no name)")
    if display_name == name:
        return shown
    return render('{shown} <small class="tag" data-wrapper>{wrapper}</small>', shown=shown, wrapper=clip(name, 200))


def clip(value: Any, limit: int = SHOWN) -> str:
    """`value` (str() of it) cut to `limit` characters, saying how many more there were."""
    text = "" if value is None else str(value)
    if len(text) <= limit:
        return text
    more = len(text) - limit
    return text[:limit] + (f"… ({more:,} more characters)" if more > 100 else "…")


def form_text(value: str) -> str:
    """A value a form sent back that the page wrote with path_part (a key or a jid), as text again."""
    return unquote(value, errors="surrogateescape")


def path_part(text: str) -> str:
    """`text` as one segment of a URL path, or as a form's value: UTF-8, percent-quoted; bytes kept by
    surrogateescape (a payload that was not UTF-8) are quoted as those bytes, so the page or row they name is found
    again (http.Request.path, form_text), where HTML would have shown them as U+FFFD."""
    try:
        return str(quote(text, safe="", errors="surrogateescape"))
    except UnicodeEncodeError:  # a lone surrogate from a JSON escape: it cannot round-trip
        return str(quote(text, safe="", errors="replace"))


def number(n: Any) -> str:
    """12345 -> '12,345'; non-numbers as they are."""
    return f"{n:,}" if isinstance(n, int) and not isinstance(n, bool) else str(n if n is not None else "–")


def human_bytes(n: Any) -> str:
    """Bytes as B / KiB / MiB / GiB."""
    if not isinstance(n, (int, float)):
        return "–"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def duration(seconds: float) -> str:
    """A short human duration: 42 s, 3 min, 5 h, 2 d."""
    s = abs(seconds)
    if s < 1:
        return "now" if s < 0.5 else "1 s"
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if s >= size:
            return f"{s / size:.0f} {unit}" if s < 10 * size else f"{s // size:.0f} {unit}"
    return f"{s:.0f} s"


def timestamp(ts: Any, now: float | None = None) -> Safe:
    """A <time> element: relative text ('3 min ago', 'in 5 s'), the UTC date and time as its title; a dash for
    anything that is not a time a date can show (a string, NaN, infinity, a year past 9999)."""
    if not isinstance(ts, (int, float)) or isinstance(ts, bool) or not math.isfinite(ts):
        return Safe("–")
    if not EARLIEST < ts < LATEST:
        return render('<span title="not a valid time">{ts}</span>', ts=f"{ts:g}")
    now = time.time() if now is None else now
    delta = ts - now
    text = duration(delta)
    if text != "now":
        text = f"in {text}" if delta > 0 else f"{text} ago"
    iso = dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return render('<time datetime="{iso}" title="{iso}">{text}</time>', iso=iso, text=text)
