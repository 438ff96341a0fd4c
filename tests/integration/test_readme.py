"""Every code block of README.md runs as written, against one real local cluster.

A ```python block runs as a script in a subprocess, with ``PGROUTER_DSN`` naming the
cluster (README's examples read it, with the DSN a reader would edit as the
default). Blocks that import aiopg.sa or asyncpgsa need SQLAlchemy < 1.5, so they
run in ``.venv-legacy`` (``scripts/setup.sh dev`` makes it, as ``scripts/test.sh``
does); without it they fail rather than skip. A ```bash block runs in bash from
the repository root, with this interpreter's directory first on ``PATH``, minus
the commands of :data:`RUN_BY_CI`.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from pgrouter.testing import LocalCluster

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
LEGACY_PYTHON = REPO / ".venv-legacy" / "bin" / "python"

#: Commands README shows that this test does not run, and what runs them instead.
RUN_BY_CI = {
    "bash scripts/test.sh": "CI's own command: .ci/run runs exactly this",
    "bash scripts/demo.sh": (
        "scripts/setup.sh (which scripts/test.sh runs) then `python3 -m pgrouter demo`, "
        "which tests/integration/test_cli.py runs for every driver"
    ),
}

#: Manager modules that need SQLAlchemy < 1.5 (the legacy environment).
_LEGACY_IMPORT = re.compile(r"^\s*(?:from|import)\s+pgrouter\.(?:aiopg_sa|asyncpgsa)\b", re.M)
_FENCE = re.compile(r"^```(?P<language>\S*)\n(?P<code>.*?)^```[ \t]*$", re.M | re.S)

#: Seconds one block may take; the slowest (``pgrouter demo``) takes ~4.
BLOCK_TIMEOUT = 90


@dataclass(frozen=True)
class Block:
    language: str
    line: int  # of the opening fence, 1-based
    code: str

    def __str__(self) -> str:
        return f"{self.language}@README.md:{self.line}"

    def commands(self) -> list[str]:
        """The block's lines without comments and blank lines (bash only)."""
        lines = (line.split("#", 1)[0].strip() for line in self.code.splitlines())
        return [line for line in lines if line]


def readme_blocks() -> list[Block]:
    text = README.read_text(encoding="utf-8")
    return [
        Block(found["language"], text.count("\n", 0, found.start()) + 1, found["code"])
        for found in _FENCE.finditer(text)
    ]


BLOCKS = readme_blocks()
PYTHON_BLOCKS = [block for block in BLOCKS if block.language == "python"]
# A block made only of commands CI runs has nothing left to run here.
BASH_BLOCKS = [
    block for block in BLOCKS if block.language == "bash" and set(block.commands()) - set(RUN_BY_CI)
]


@pytest.fixture(scope="module")
def environment(shared_cluster: LocalCluster) -> dict[str, str]:
    env = dict(os.environ, PGROUTER_DSN=shared_cluster.dsn())
    # `python3` and `pgrouter` in a bash block are this environment's.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def _check(done: subprocess.CompletedProcess[str], block: Block) -> None:
    assert done.returncode == 0, (
        f"{block} exited with {done.returncode}\n--- code ---\n{block.code}"
        f"--- stdout ---\n{done.stdout}--- stderr ---\n{done.stderr}"
    )


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=str)
def test_python_block_runs(block: Block, environment: dict[str, str], tmp_path: Path) -> None:
    python = sys.executable
    if _LEGACY_IMPORT.search(block.code):
        if not LEGACY_PYTHON.exists():
            pytest.fail(
                f"{block} needs the legacy environment (SQLAlchemy < 1.5): "
                f"{LEGACY_PYTHON} is missing; `bash scripts/setup.sh dev` makes it"
            )
        python = str(LEGACY_PYTHON)
    script = tmp_path / f"readme_line_{block.line}.py"
    script.write_text(block.code, encoding="utf-8")
    done = subprocess.run(
        [python, str(script)],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT,
        check=False,
    )
    _check(done, block)


@pytest.mark.parametrize("block", BASH_BLOCKS, ids=str)
def test_bash_block_runs(block: Block, environment: dict[str, str], tmp_path: Path) -> None:
    kept = [
        line for line in block.code.splitlines() if line.split("#", 1)[0].strip() not in RUN_BY_CI
    ]
    script = tmp_path / f"readme_line_{block.line}.sh"
    script.write_text("\n".join(kept) + "\n", encoding="utf-8")
    done = subprocess.run(
        ["bash", "-euo", "pipefail", str(script)],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT,
        check=False,
    )
    _check(done, block)


def test_every_block_is_one_this_file_runs() -> None:
    unknown = [str(block) for block in BLOCKS if block.language not in ("python", "bash")]
    assert not unknown, f"code blocks in a language no test runs: {unknown}"


def test_commands_left_to_ci_are_in_readme() -> None:
    """The exemptions stay exactly the commands README shows, so none outlives its reason."""
    shown = {
        command for block in BLOCKS if block.language == "bash" for command in block.commands()
    }
    assert set(RUN_BY_CI) <= shown


def test_every_driver_has_a_quick_start() -> None:
    modules = ["asyncpg", "psycopg3", "aiopg", "aiopg_sa", "asyncpgsa", "sqlalchemy"]
    missing = [
        module
        for module in modules
        if not any(
            f"from pgrouter.{module} import PoolManager" in block.code for block in PYTHON_BLOCKS
        )
    ]
    assert not missing, f"no README example uses these drivers: {missing}"
