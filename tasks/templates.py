"""Prompt templates: versioned Jinja2 templates per category, rendered in a sandbox with run-time context.

A team keeps its templates where it edits them — a YAML or JSON file in the client's source storage, a
local file, or a Prefect Variable — and the profile names where (`ClientProfile.prompt_templates`):

    templates:
      - name: kitchen            # one template, several versions and locale variants
        version: 2
        categories: [kitchen]    # which records' category it applies to; none = any (the fallback)
        text: "{{ style }} of {{ subject }} on a {{ context.season }} {{ context.time_of_day }} table"
      - name: kitchen
        version: 2
        locale: de-DE            # the German variant of the same version, with its own caption
        text: "..."
        caption: "{{ subject }} im {{ context.season }}"

Templates render in Jinja2's `SandboxedEnvironment` with `StrictUndefined`: a slot the template uses that
the asset does not have, an attribute the sandbox refuses (`{{ ''.__class__ }}`) or a banned word in the
result is an `InvalidInput` naming the template (name@version) and the slot. Slots: `subject`, `style`,
`client`, `extra`, `palette` (words), `record.*` (the asset record's fields that are set), `brand.*`
(name, palette, palette_hex, tone), `context.*` (time_of_day, season, holiday, date, weekday, hour — at
the client's timezone, from an injected clock) and `event.*` (values the triggering event passed).

The template's name and version go into the asset's recipe and generation keys: a new version redoes
only the assets it applies to (its categories), and a profile can pin a version (`template_pins`).
"""

from __future__ import annotations

import json
import re
import time
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError
from jinja2.sandbox import SandboxedEnvironment, SecurityError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from brandforge.models import AssetRecord, InvalidInput, describe_validation_error

MAX_TEMPLATE_CHARS = 4000

# --------------------------------------------------------------------------- the templates file


class PromptTemplate(BaseModel):
    """One version (and locale variant) of a named prompt template."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    version: int = Field(ge=1)
    categories: list[str] = Field(default_factory=list, description="Record categories it applies to; empty = any.")
    locale: str | None = Field(None, description="The locale (de-DE) or language (de) of this variant; none = the default.")
    text: str = Field(min_length=1, max_length=MAX_TEMPLATE_CHARS)
    caption: str | None = Field(None, max_length=MAX_TEMPLATE_CHARS, description="A caption (alt text) in the variant's language.")

    @property
    def ident(self) -> str:
        """name@version, plus the locale of a variant: what the keys and the ledger record."""
        return f"{self.name}@{self.version}" + (f"/{self.locale}" if self.locale else "")


class TemplateSet(BaseModel):
    """Every template of a client; each (name, version, locale) once, each template compiles."""

    model_config = ConfigDict(extra="forbid")

    templates: list[PromptTemplate] = Field(default_factory=list)

    @model_validator(mode="after")
    def _distinct_and_compiling(self) -> "TemplateSet":
        seen: set[tuple] = set()
        for t in self.templates:
            key = (t.name, t.version, (t.locale or "").lower())
            if key in seen:
                raise ValueError(f"template {t.ident} is defined twice")
            seen.add(key)
            for field in ("text", "caption"):
                if getattr(t, field):
                    compiled(getattr(t, field), f"{t.ident}" + (" caption" if field == "caption" else ""))
        return self

    def names(self) -> set[str]:
        return {t.name for t in self.templates}

    def versions(self, name: str) -> list[int]:
        return sorted({t.version for t in self.templates if t.name == name})

    def choose(self, record: AssetRecord | None, *, pins: dict[str, int] | None = None, name: str | None = None) -> PromptTemplate:
        """The template for an asset: the record's pinned template (`name` or `name@version`), else `name`
        (a routing rule's), else the one whose categories hold the record's category, else one for any
        category; its version pinned (record, then profile) or the latest; its variant for the record's
        locale (exact, then language), else the default variant."""
        pinned_version = None
        wanted = None
        for pin in (name, record.template if record else None):  # the record's pin wins over the rule's
            if pin:
                wanted, _, v = pin.partition("@")
                pinned_version = int(v) if v.isdigit() else None
        category = (record.category or "").lower() if record else ""
        if wanted is None:
            specific = [t for t in self.templates if category and category in {c.lower() for c in t.categories}]
            fallback = [t for t in self.templates if not t.categories]
            pool = specific or fallback
            if not pool:
                raise InvalidInput(f"no prompt template applies to category {category or '(none)'!r}; "
                                   f"add one with categories: [{category}] or one without categories")
            wanted = max(pool, key=lambda t: t.version).name
        if wanted not in self.names():
            raise InvalidInput(f"prompt template {wanted!r} is not defined; known: {sorted(self.names())}")
        version = pinned_version or (pins or {}).get(wanted) or max(self.versions(wanted))
        variants = [t for t in self.templates if t.name == wanted and t.version == version]
        if not variants:
            raise InvalidInput(f"prompt template {wanted!r} has no version {version}; versions: {self.versions(wanted)}")
        locale = (record.locale or "").lower() if record else ""
        for match in (lambda t: (t.locale or "").lower() == locale and locale,
                      lambda t: t.locale and (t.locale.lower().split("-")[0] == locale.split("-")[0]) and locale,
                      lambda t: not t.locale):
            found = [t for t in variants if match(t)]
            if found:
                return found[0]
        return variants[0]


def parse_templates(text: str, where: str) -> TemplateSet:
    """A templates document (YAML or JSON: `{templates: [...]}` or the list itself), validated."""
    try:
        import yaml

        data = yaml.safe_load(text)
    except ImportError:  # pragma: no cover - PyYAML comes with Prefect; JSON is YAML
        data = json.loads(text)
    except Exception as exc:  # noqa: BLE001 - yaml's errors have many types
        raise InvalidInput(f"prompt templates {where}: not valid YAML/JSON ({exc})") from exc
    if isinstance(data, list):
        data = {"templates": data}
    if not isinstance(data, dict):
        raise InvalidInput(f"prompt templates {where}: expected a mapping with 'templates' (a list)")
    try:
        return TemplateSet.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput(f"prompt templates {where}: {describe_validation_error(exc)}") from exc


_VARIABLE_CACHE: dict[str, tuple[float, TemplateSet]] = {}
VARIABLE_TTL_S = 30.0


def load_templates(location: str, storage: Any = None) -> TemplateSet:
    """The templates at `location`: `variable:NAME` (a Prefect Variable holding the document; read at most
    every 30 s), `source:PATH` (a file in the client's source storage block), or a local file path."""
    if location.startswith("variable:"):
        name = location.removeprefix("variable:")
        cached = _VARIABLE_CACHE.get(name)
        if cached and time.monotonic() - cached[0] < VARIABLE_TTL_S:
            return cached[1]
        from prefect.variables import Variable

        value = Variable.get(name)
        if value is None:
            raise InvalidInput(f"prompt templates: Prefect Variable {name!r} does not exist")
        text = value if isinstance(value, str) else json.dumps(value)
        found = parse_templates(text, f"(variable {name})")
        _VARIABLE_CACHE[name] = (time.monotonic(), found)
        return found
    if location.startswith("source:"):
        path = location.removeprefix("source:").lstrip("/")
        if storage is None:
            raise InvalidInput(f"prompt templates {location}: the client has no source storage to read them from")
        try:
            data = storage.read_path(path) if hasattr(storage, "bucket_name") else (Path(storage.basepath or ".") / path).read_bytes()
        except (OSError, ValueError) as exc:
            raise InvalidInput(f"prompt templates {location}: cannot be read ({exc})") from exc
        return parse_templates(data.decode("utf-8-sig"), location)
    try:
        return parse_templates(Path(location).read_text(encoding="utf-8-sig"), location)
    except OSError as exc:
        raise InvalidInput(f"prompt templates {location}: cannot be read ({exc})") from exc


# --------------------------------------------------------------------------- context providers

# A small calendar of widely marketed days (month-day); a profile's `holidays` adds or overrides
# ('MM-DD' every year, 'YYYY-MM-DD' once).
HOLIDAYS = {
    "01-01": "New Year's Day", "02-14": "Valentine's Day", "03-17": "St Patrick's Day", "10-31": "Halloween",
    "12-24": "Christmas Eve", "12-25": "Christmas Day", "12-26": "Boxing Day", "12-31": "New Year's Eve",
}
_NORTH_SEASONS = {12: "winter", 1: "winter", 2: "winter", 3: "spring", 4: "spring", 5: "spring",
                  6: "summer", 7: "summer", 8: "summer", 9: "autumn", 10: "autumn", 11: "autumn"}
_OPPOSITE = {"winter": "summer", "summer": "winter", "spring": "autumn", "autumn": "spring"}


def time_of_day(hour: int) -> str:
    return "morning" if 5 <= hour < 12 else "afternoon" if hour < 17 else "evening" if hour < 21 else "night"


def season(month: int, hemisphere: str = "north") -> str:
    """Meteorological season of a month; the southern hemisphere's is the opposite."""
    name = _NORTH_SEASONS[month]
    return _OPPOSITE[name] if hemisphere == "south" else name


def local_time(now: datetime, tz: str) -> datetime:
    if now.tzinfo is None:
        now = now.replace(tzinfo=timezone.utc)
    try:
        return now.astimezone(ZoneInfo(tz))
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidInput(f"timezone {tz!r} is not an IANA time zone such as 'Europe/Berlin'") from exc


def holiday(day: datetime, extra: dict[str, str] | None = None) -> str:
    table = {**HOLIDAYS, **(extra or {})}
    return table.get(day.strftime("%Y-%m-%d")) or table.get(day.strftime("%m-%d")) or ""


def context_slots(now: datetime, tz: str = "UTC", *, hemisphere: str = "north", holidays: dict[str, str] | None = None) -> dict[str, Any]:
    """The run-time context at the client's timezone, from an injected clock (`now`, aware or UTC)."""
    local = local_time(now, tz)
    return {"time_of_day": time_of_day(local.hour), "season": season(local.month, hemisphere),
            "holiday": holiday(local, holidays), "date": local.date().isoformat(), "weekday": local.strftime("%A"),
            "hour": local.hour, "timezone": tz}


# --------------------------------------------------------------------------- palette words

# Named colours for prompts ("navy and gold" reads better to a model than hex).
COLOUR_NAMES = {
    "black": (0, 0, 0), "white": (255, 255, 255), "grey": (128, 128, 128), "silver": (192, 192, 192),
    "navy": (20, 33, 61), "blue": (43, 111, 158), "sky blue": (135, 206, 235), "teal": (0, 128, 128),
    "green": (46, 139, 87), "olive": (128, 128, 0), "lime": (50, 205, 50), "yellow": (245, 215, 66),
    "gold": (232, 168, 56), "orange": (255, 140, 0), "terracotta": (200, 85, 61), "red": (200, 30, 45),
    "burgundy": (128, 0, 32), "pink": (255, 160, 190), "purple": (110, 60, 150), "brown": (120, 72, 40),
    "beige": (222, 205, 170), "cream": (252, 246, 236),
}


def colour_word(hex_colour: str) -> str:
    c = hex_colour.lstrip("#")
    rgb = (int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16))
    return min(COLOUR_NAMES, key=lambda n: sum((a - b) ** 2 for a, b in zip(COLOUR_NAMES[n], rgb)))


def palette_words(palette: list[str], words: list[str] | None = None) -> list[str]:
    """The brand's colours as words: the profile's own names when given, else the nearest named colour."""
    if words:
        return list(words)
    return list(dict.fromkeys(colour_word(c) for c in palette))


# --------------------------------------------------------------------------- rendering


_ENV = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, trim_blocks=True, lstrip_blocks=True)


@lru_cache(maxsize=256)
def compiled(text: str, ident: str = "template"):
    """The compiled template (cached by text); a syntax error names the template and line."""
    try:
        return _ENV.from_string(text)
    except TemplateSyntaxError as exc:
        raise InvalidInput(f"prompt template {ident}: syntax error on line {exc.lineno}: {exc.message}") from exc


def _missing_slot(message: str) -> str:
    for pattern in (r"access to attribute '([^']+)'", r"'([^']+)' is undefined", r"has no attribute '([^']+)'",
                    r"no element '?([^']+?)'?$"):
        m = re.search(pattern, message)
        if m:
            return m.group(1)
    return message


def _slot_holding(word: str, slots: dict[str, Any], prefix: str = "") -> str | None:
    """The slot whose value holds a banned word (dotted path), or None when the template text itself does."""
    for key, value in slots.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            found = _slot_holding(word, value, f"{path}.")
            if found:
                return found
        elif re.search(rf"\b{re.escape(word)}\b", " ".join(value) if isinstance(value, list) else str(value), re.I):
            return path
    return None


def render_text(text: str, ident: str, slots: dict[str, Any], banned_words: list[str] | None = None) -> str:
    """Render one template text; InvalidInput names the template and the slot for a missing slot, a
    sandbox refusal or a banned word in the result."""
    template = compiled(text, ident)
    try:
        rendered = template.render(**slots)
    except SecurityError as exc:
        raise InvalidInput(f"prompt template {ident}: sandbox refused {_missing_slot(str(exc))!r}: {exc}") from exc
    except UndefinedError as exc:
        if "unsafe" in str(exc):
            raise InvalidInput(f"prompt template {ident}: sandbox refused {_missing_slot(str(exc))!r}: {exc}") from exc
        raise InvalidInput(f"prompt template {ident}: slot {_missing_slot(str(exc))!r} is missing for this asset ({exc})") from exc
    except (TypeError, ValueError, ArithmeticError) as exc:
        raise InvalidInput(f"prompt template {ident}: {type(exc).__name__}: {exc}") from exc
    rendered = " ".join(rendered.replace(" ,", ",").split()).strip(" ,")
    for word in banned_words or []:
        if word.strip() and re.search(rf"\b{re.escape(word.strip())}\b", rendered, re.I):
            slot = _slot_holding(word.strip(), slots)
            where = f"slot {slot!r}" if slot else "the template text"
            raise InvalidInput(f"prompt template {ident}: banned word {word.strip()!r} in the prompt (from {where})")
    return rendered


def template_slots(*, subject: str, style: str, client: str, extra: str, palette: list[str], palette_hex: list[str],
                   tone: str, record: AssetRecord | None, context: dict[str, Any]) -> dict[str, Any]:
    """Everything a template may use; record fields that are unset are absent (StrictUndefined names them)."""
    fields = record.model_dump(exclude={"context", "origin", "loras", "seed", "template"}) if record else {}
    return {
        "subject": subject, "style": style, "client": client, "extra": extra, "palette": ", ".join(palette),
        "record": {k: v for k, v in fields.items() if v not in (None, "", [])},
        "brand": {"name": client, "palette": palette, "palette_hex": palette_hex, "tone": tone},
        "context": context,
        "event": dict(record.context) if record else {},
    }
