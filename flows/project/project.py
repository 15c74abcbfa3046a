"""A project directory and its validated params: what every step takes."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from flows.project.layout import ProjectLayout
from flows.project.params import Params, load_params


@dataclass
class Project:
    """A project directory and its validated params."""
    layout: ProjectLayout
    params: Params

    @classmethod
    def open(cls, root: str | Path = ".") -> "Project":
        layout = ProjectLayout(Path(root).resolve())
        if not layout.params.exists():
            raise FileNotFoundError(f"{layout.params} is missing: run `tinyloop init "
                                    f"{layout.root}` first")
        return cls(layout, load_params(layout.params))

    @property
    def source(self) -> Path:
        """The raw dataset root (image paths in labels files are relative to it)."""
        src = Path(self.params.data.source)
        return src if src.is_absolute() else self.layout.root / src

    @property
    def classes(self) -> list[str]:
        return list(self.params.data.classes)
