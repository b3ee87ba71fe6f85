"""mypy is clean on the four packages (issue 13; configuration in pyproject.toml, [tool.mypy]).

Types are part of the structure: the frozen message bodies, the action
unions and the sans-io step functions are only as good as the checker that
reads them.  The test runs mypy in-process through its API on the same
packages and settings as ``mypy agents security sim_bridge ops``, with a
cache of its own under pytest's tmp directory so it works from a clean
checkout and never reuses a stale ``.mypy_cache``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from mypy import api

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["agents", "security", "sim_bridge", "ops"]


@pytest.mark.timeout(600)
def test_mypy_reports_no_error(tmp_path_factory: pytest.TempPathFactory,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)   # pyproject.toml's [tool.mypy] is found from the working directory
    cache = tmp_path_factory.mktemp("mypy_cache")
    stdout, stderr, status = api.run(["--config-file", str(ROOT / "pyproject.toml"),
                                      "--cache-dir", str(cache), "--no-error-summary",
                                      *PACKAGES])
    errors = [line for line in stdout.splitlines() if ": error:" in line]
    assert status == 0 and not errors and not stderr, (
        f"mypy found {len(errors)} error(s) (exit {status}):\n{stdout}{stderr}")
