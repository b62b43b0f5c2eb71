"""Call-flow test files (``ari-agent test``): the TOML format, parsed and checked without IO.

A file holds scenarios; a scenario is one call, its steps what the caller does
(``say``, ``audio``, ``dtmf``, ``wait``) and what it expects::

    extension = "100@ai-agent-demo"        # default for the file; a scenario may override it

    [[scenario]]
    name = "opening hours, then goodbye"
    [[scenario.step]]
    say = "what time do you open"
    expect_reply = "nine in the morning"    # case-insensitive substring; "/regex/" for a regex
    [[scenario.step]]
    say = "goodbye"
    expect_end = "hangup_by_agent"
    expect_status = "COMPLETED"

:func:`parse` turns the text into frozen models or raises :class:`FlowFileError`
with every problem's line and field; :func:`load` reads a file and also checks
that the ``audio`` files it names exist.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

DEFAULT_EXTENSION = "100@ai-agent-demo"
ACTIONS = ("say", "audio", "dtmf", "wait")

End = Literal["hangup_by_caller", "hangup_by_agent", "transferred", "busy", "failed", "drained"]
Status = Literal["COMPLETED", "TRANSFERRED", "BUSY", "FAILED", "DRAINING"]
_EXTENSION = r"^[^@\s]+@[^@\s]+$"


# ---------------------------------------------------------------- matching text


@dataclass(frozen=True)
class Matcher:
    """``"/regex/"`` (searched, case-insensitive) or a case-insensitive substring."""

    pattern: str

    @property
    def is_regex(self) -> bool:
        return len(self.pattern) >= 2 and self.pattern.startswith("/") and self.pattern.endswith("/")

    def compiled(self) -> re.Pattern[str]:
        return re.compile(self.pattern[1:-1], re.IGNORECASE)

    def matches(self, text: str) -> bool:
        if self.is_regex:
            return self.compiled().search(text) is not None
        return self.pattern.casefold() in text.casefold()

    def equals(self, text: str) -> bool:
        """For values (captured fields): the whole value, case-insensitive, or a regex search."""
        if self.is_regex:
            return self.compiled().search(text) is not None
        return self.pattern.strip().casefold() == text.strip().casefold()


def _check_pattern(value: str | None) -> str | None:
    if value is not None and Matcher(value).is_regex:
        try:
            Matcher(value).compiled()
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
    return value


# ---------------------------------------------------------------- the models


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class FieldExpectation(_Strict):
    name: str = Field(min_length=1)
    value: str

    _pattern = field_validator("value")(_check_pattern)


class Step(_Strict):
    say: str | None = Field(None, min_length=1)
    audio: str | None = Field(None, min_length=1)  # WAV file, relative to the test file
    dtmf: str | None = Field(None, pattern=r"^[0-9*#A-D]+$")
    wait: float | None = Field(None, gt=0, le=600)
    expect_reply: str | None = Field(None, min_length=1)
    max_reply_ms: int | None = Field(None, ge=1)
    expect_end: End | None = None
    expect_status: Status | None = None
    expect_field: FieldExpectation | None = None
    expect_destination: str | None = Field(None, min_length=1)

    _pattern = field_validator("expect_reply")(_check_pattern)

    @field_validator("wait", mode="before")
    @classmethod
    def _wait_number(cls, value: Any) -> Any:
        # Strict mode takes no int for a float; `wait = 2` is as clear as `wait = 2.0`.
        return float(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @model_validator(mode="after")
    def _one_action(self) -> Step:
        given = [name for name in ACTIONS if getattr(self, name) is not None]
        if len(given) != 1:
            found = ", ".join(given) if given else "none"
            raise ValueError(f"a step does exactly one of {', '.join(ACTIONS)} (found: {found})")
        if self.max_reply_ms is not None and self.wait is not None:
            raise ValueError("max_reply_ms needs a step that says, plays or presses something (not wait)")
        return self

    @property
    def action(self) -> str:
        return next(name for name in ACTIONS if getattr(self, name) is not None)

    @property
    def label(self) -> str:
        value = getattr(self, self.action)
        if self.action == "wait":
            return f"wait {value:g} s"
        if self.action == "audio":
            return f"audio {Path(value).name}"
        return f"{self.action} {value!r}"


class Scenario(_Strict):
    name: str = Field(min_length=1)
    extension: str | None = Field(None, pattern=_EXTENSION)
    step: list[Step] = Field(min_length=1)


class FlowFile(_Strict):
    extension: str | None = Field(None, pattern=_EXTENSION)
    scenario: list[Scenario] = Field(min_length=1)


# ---------------------------------------------------------------- errors with lines


@dataclass(frozen=True)
class Problem:
    line: int | None
    where: str  # e.g. "scenario[1].step[2].expect_reply" (1-based, as a reader counts)
    message: str


class FlowFileError(ValueError):
    def __init__(self, path: str, problems: list[Problem]) -> None:
        self.path = path
        self.problems = problems
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        out = []
        for p in self.problems:
            at = f"{self.path}:{p.line}" if p.line is not None else self.path
            out.append(f"{at}: {p.where + ': ' if p.where else ''}{p.message}")
        return out


_HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\-\" ]+?)\s*\]\]?\s*(#.*)?$")


def _key_line(lines: list[str], start: int, end: int, key: str) -> int | None:
    pattern = re.compile(rf"^\s*{re.escape(key)}\s*=|[{{,]\s*{re.escape(key)}\s*=")
    for number in range(start, end):
        if pattern.search(lines[number]):
            return number + 1
    return None


def locate(text: str, loc: tuple[int | str, ...]) -> int | None:
    """The 1-based line of the key at ``loc`` (a pydantic error location), best effort.

    Follows ``[[scenario]]`` and ``[[scenario.step]]`` headers to the table the
    key belongs to, then looks for ``key =`` in it (also inside an inline table);
    a key that is missing gives the line of its table's header.
    """
    lines = text.splitlines()
    headers: list[tuple[int, str]] = []  # (line index, table name)
    for number, line in enumerate(lines):
        m = _HEADER.match(line)
        if m:
            headers.append((number, m.group(2).replace(" ", "").replace('"', "")))
    # Which table: walk the location's leading (name, index) pairs.
    table, index_path = "", []
    rest = list(loc)
    while len(rest) >= 2 and isinstance(rest[0], str) and isinstance(rest[1], int):
        table = f"{table}.{rest[0]}" if table else rest[0]
        index_path.append(rest[1])
        rest = rest[2:]
    start, end = 0, headers[0][0] if headers else len(lines)
    if table:
        found = _table_span(headers, table, index_path, len(lines))
        if found is None:
            return None
        start, end = found
    key = next((part for part in rest if isinstance(part, str)), None)
    if key is None:
        return start + 1 if table else None
    return _key_line(lines, start, end, key) or (start + 1 if table else None)


def _table_span(
    headers: list[tuple[int, str]], table: str, indices: list[int], total: int
) -> tuple[int, int] | None:
    """Lines [header, next header) of the array-of-tables element ``table`` at ``indices``."""
    parts = table.split(".")
    counters: dict[str, int] = {}
    target = None
    for position, (_line, name) in enumerate(headers):
        depth = len(name.split("."))
        # A new parent element resets the counts of its children.
        for other in list(counters):
            if len(other.split(".")) > depth and other.startswith(name + "."):
                del counters[other]
        counters[name] = counters.get(name, -1) + 1
        if name == table and all(
            counters.get(".".join(parts[: i + 1])) == indices[i] for i in range(len(parts))
        ):
            target = position
            break
    if target is None:
        return None
    start = headers[target][0]
    end = headers[target + 1][0] if target + 1 < len(headers) else total
    return start, end


_PATTERN_HINTS = {
    "extension": "should be EXT@CONTEXT, e.g. 100@ai-agent-demo",
    "dtmf": "should be DTMF digits: 0-9, *, #, A-D",
}


def _where(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part + 1}]"
        elif part.startswith("function-") or part in ("literal_error",):
            continue
        else:
            out += f".{part}" if out else part
    return out


# ---------------------------------------------------------------- parsing


def parse(text: str, path: str = "<text>") -> FlowFile:
    """The file's scenarios, or :class:`FlowFileError` naming each problem's line and field."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"\(at line (\d+), column \d+\)", str(exc))
        raise FlowFileError(
            path, [Problem(int(m.group(1)) if m else None, "", f"not valid TOML: {exc}")]
        ) from None
    try:
        flows = FlowFile.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False):
            loc = tuple(error["loc"])
            message = error["msg"].removeprefix("Value error, ")
            if error["type"] == "extra_forbidden":
                message = "unknown field"
            elif error["type"] == "string_pattern_mismatch":
                message = _PATTERN_HINTS.get(str(loc[-1]), message)
            problems.append(Problem(locate(text, loc), _where(loc), message))
        raise FlowFileError(path, problems) from None
    seen: dict[str, int] = {}
    problems = []
    for i, scenario in enumerate(flows.scenario):
        if scenario.name in seen:
            problems.append(
                Problem(
                    locate(text, ("scenario", i, "name")),
                    f"scenario[{i + 1}].name",
                    f"{scenario.name!r} is already the name of scenario {seen[scenario.name] + 1}",
                )
            )
        seen.setdefault(scenario.name, i)
    if problems:
        raise FlowFileError(path, problems)
    return flows


def load(path: Path) -> FlowFile:
    """Read and parse ``path``; ``audio`` files resolved against its folder and checked."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FlowFileError(str(path), [Problem(None, "", f"cannot read: {exc}")]) from None
    flows = parse(text, str(path))
    problems = []
    scenarios = []
    for i, scenario in enumerate(flows.scenario):
        steps = []
        for j, step in enumerate(scenario.step):
            if step.audio is not None:
                audio = (path.parent / step.audio).resolve()
                if not audio.is_file():
                    problems.append(
                        Problem(
                            locate(text, ("scenario", i, "step", j, "audio")),
                            f"scenario[{i + 1}].step[{j + 1}].audio",
                            f"no such file: {audio}",
                        )
                    )
                step = step.model_copy(update={"audio": str(audio)})
            steps.append(step)
        scenarios.append(scenario.model_copy(update={"step": steps}))
    if problems:
        raise FlowFileError(str(path), problems)
    return flows.model_copy(update={"scenario": scenarios})


def target(flows: FlowFile, scenario: Scenario, default: str | None = None) -> str:
    """The scenario's own extension, else ``default`` (the command line's), else the file's."""
    return scenario.extension or default or flows.extension or DEFAULT_EXTENSION
