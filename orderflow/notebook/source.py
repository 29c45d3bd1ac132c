"""The package's own source on screen: the notebooks teach from the real code."""

from __future__ import annotations

import inspect
import textwrap
from dataclasses import dataclass
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class SourceView:
    """Source of objects from the package, with file and line, rendered as highlighted code."""

    parts: list[tuple[str, str, int, str]]  # (qualified name, file, first line, source)

    def _repr_markdown_(self) -> str:
        return "\n\n".join(
            f"`{name}` — `{path}`, line {line}\n\n```python\n{source.rstrip()}\n```"
            for name, path, line, source in self.parts
        )

    def __repr__(self) -> str:
        return "\n\n".join(
            f"# {name} ({path}, line {line})\n{source.rstrip()}" for name, path, line, source in self.parts
        )

    @property
    def text(self) -> str:
        return "\n".join(source for *_, source in self.parts)


def show_source(*objects) -> SourceView:
    """The real source of functions, methods or classes from the package (``inspect.getsource``)."""
    parts = []
    for obj in objects:
        lines, first = inspect.getsourcelines(obj)
        source_file = inspect.getsourcefile(obj)
        assert source_file is not None  # getsourcelines found it
        path = Path(source_file).resolve()
        try:
            path = path.relative_to(PACKAGE_ROOT)
        except ValueError:
            pass
        name = f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', repr(obj))}".lstrip(".")
        parts.append((name, str(path), first, textwrap.dedent("".join(lines))))
    return SourceView(parts)
