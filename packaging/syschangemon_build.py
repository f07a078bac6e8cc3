"""The PEP 517 build backend: setuptools, plus the man page and bash completion.

Both are generated from the live argument parser while the wheel is built (by
gen_docs.py, next to this file) and shipped as data files, so that any install of the
wheel (pip, pipx, the Debian package) gets ``share/man/man1/syschangemon.1`` and
``share/bash-completion/completions/syschangemon`` under its prefix.

Generating them imports the program, and the program imports its dependencies, so
a wheel build asks for the [project] dependencies on top of the static build
requirements. They are read from pyproject.toml here rather than repeated there, so
the two lists cannot drift apart. This module is named for the project (not
``packaging``) because setuptools imports the PyPI ``packaging`` library.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

from setuptools import build_meta as _setuptools
from setuptools.command.build_py import build_py as _build_py
from setuptools.command.sdist import sdist as _sdist

# The hooks setuptools serves unchanged.
build_wheel = _setuptools.build_wheel
build_sdist = _setuptools.build_sdist
build_editable = _setuptools.build_editable
prepare_metadata_for_build_wheel = _setuptools.prepare_metadata_for_build_wheel
prepare_metadata_for_build_editable = _setuptools.prepare_metadata_for_build_editable
get_requires_for_build_sdist = _setuptools.get_requires_for_build_sdist

HERE = Path(__file__).resolve().parent
GENERATOR = HERE / "gen_docs.py"
# (installed directory, generated file name): the installed name is the command's.
DOCS = (("share/man/man1", "syschangemon.1"),
        ("share/bash-completion/completions", "syschangemon"))


def _project_dependencies() -> list[str]:
    """The [project] dependencies of the pyproject.toml being built."""
    with open("pyproject.toml", "rb") as handle:
        return list(tomllib.load(handle)["project"].get("dependencies", []))


def get_requires_for_build_wheel(config_settings: dict | None = None) -> list[str]:
    """setuptools' requirements plus the project's own dependencies (see the docstring)."""
    return _setuptools.get_requires_for_build_wheel(config_settings) + _project_dependencies()


def get_requires_for_build_editable(config_settings: dict | None = None) -> list[str]:
    """As for a wheel: an editable install runs the same build_py."""
    return _setuptools.get_requires_for_build_editable(config_settings) + _project_dependencies()


class BuildPy(_build_py):
    """build_py that also writes the man page and completion and adds them as data files."""

    def run(self) -> None:
        """Build the Python files, then the documentation from the just-copied parser."""
        super().run()
        out = Path(self.get_finalized_command("build").build_base) / "syschangemon-docs"
        man, bash = (out / name for _, name in DOCS)
        env = dict(os.environ)
        # The source tree, not an installed copy, is the parser to document.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (os.getcwd(), env.get("PYTHONPATH"))))
        subprocess.run([sys.executable, str(GENERATOR), "--man", str(man), "--bash", str(bash)],
                       check=True, env=env)
        # install_data reads this list when bdist_wheel runs install, after build_py.
        self.distribution.data_files = list(self.distribution.data_files or []) + [
            (directory, [str(out / name)]) for directory, name in DOCS]


class Sdist(_sdist):
    """sdist that carries this backend and the generator, so the sdist can build a wheel."""

    def make_release_tree(self, base_dir: str, files: list[str]) -> None:
        """Add packaging/*.py to the files copied into the release tree."""
        extra = [str(path.relative_to(Path.cwd())) for path in sorted(HERE.glob("*.py"))]
        super().make_release_tree(base_dir, list(files) + [f for f in extra if f not in files])
