"""The Makefile's training targets: a shared file that is missing stops `make` with one line naming the file and
the target that needs it (exit 2), before anything is written."""

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
@pytest.mark.parametrize(
    "target,variable", [("data/tatoeba/collection.json", "TATOEBA"), ("data/qed/collection.json", "QED_DIR")]
)
def test_a_missing_shared_file_is_one_line(tmp_path, target, variable):
    missing = tmp_path / "nowhere" / "file.tsv"
    # run in an empty folder (nothing of the checkout can be written), the venv's stamp taken as present
    (tmp_path / "pyproject.toml").touch()
    stamp = tmp_path / "stamp"
    stamp.touch()
    os.utime(stamp, (time.time() + 60, time.time() + 60))  # newer than what it depends on
    got = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "-C",
            str(tmp_path),
            "-f",
            str(ROOT / "Makefile"),
            target,
            f"{variable}={missing}",
            f"STAMP={stamp}",
        ],
        capture_output=True,
        text=True,
    )
    lines = [x for x in got.stdout.splitlines() if x.startswith("make:")]
    assert got.returncode == 2
    assert not (tmp_path / "data").exists()  # nothing written
    assert len(lines) == 1 and str(missing) in lines[0] and f"make {target} needs it" in lines[0], got.stdout
    assert "Traceback" not in got.stdout + got.stderr
