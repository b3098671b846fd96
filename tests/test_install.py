"""Install: no Paddle in the core dependencies, a `cpu` extra, one clear line without Paddle."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from train import install

ROOT = Path(__file__).resolve().parent.parent
NO_PADDLE = "import sys; sys.modules['paddle'] = None  # `import paddle` now fails\n"


def requirement_name(req: str) -> str:
    return re.split(r"[\s\[<>=!~;]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_metadata_has_no_unconditional_paddle() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    core = [requirement_name(r) for r in project["dependencies"]]
    assert not [name for name in core if name.startswith("paddle")], core
    extras = project["optional-dependencies"]
    assert extras["cpu"] == ["paddlepaddle>=3.1"]  # KaimingNormal(mode=...) needs 3.1
    assert not [r for r in extras["test"] if requirement_name(r).startswith("paddle")]


def test_readme_commands_install_the_cpu_build_and_ci_runs_the_test_command() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    first, second = re.search(r"```bash\n(.*?)\n(.*?)\n```", readme).groups()
    assert first.startswith('pip install -e ".[cpu]" && python cli.py demo')
    test_command = second.split("#")[0].strip()
    assert test_command == 'pip install -e ".[cpu,test]" && python -m pytest -q'
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()
    assert ci[-1] == test_command


def run_without_paddle(code: str, tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", NO_PADDLE + code],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_import_train_without_paddle_names_both_packages(tmp_path: Path) -> None:
    res = run_without_paddle("import train", tmp_path)
    assert res.returncode == 1
    last = res.stderr.strip().splitlines()[-1]
    assert last == f"ImportError: {install.PADDLE_MISSING}"
    assert "'paddlepaddle>=3.1'" in last and "paddlepaddle-gpu>=3.1" in last


def test_cli_without_paddle_is_one_error_line(tmp_path: Path) -> None:
    code = f"import cli; cli.main(['train', '--model', 'tiny', '--run-dir', {str(tmp_path)!r}])"
    res = run_without_paddle(code, tmp_path)
    assert res.returncode == 1, res.stderr
    assert res.stderr.strip() == f"Error: {install.PADDLE_MISSING}"
    assert not (tmp_path / "config.json").exists()


@pytest.mark.parametrize(
    ("found", "problem"),
    [
        ({"paddlepaddle": "3.3.1"}, None),
        ({"paddlepaddle-gpu": "3.1.0"}, None),
        ({"paddlepaddle": "0.0.0"}, None),  # Paddle's develop builds
        ({"paddlepaddle": "3.0.0"}, "needs PaddlePaddle >= 3.1, paddlepaddle 3.0.0 is installed"),
        ({"paddlepaddle-gpu": "2.6.2"}, "paddlepaddle-gpu 2.6.2 is installed"),
    ],
)
def test_paddle_version_check(monkeypatch: pytest.MonkeyPatch, found: dict, problem: str | None):
    monkeypatch.setattr(install, "installed_distributions", lambda: found)
    if problem is None:
        install.require_paddle()
    else:
        with pytest.raises(ImportError, match=problem):
            install.require_paddle()


def test_mixed_install_is_diagnosed(monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    from train.device import use_device

    both = {"paddlepaddle": "3.3.1", "paddlepaddle-gpu": "3.2.0"}
    monkeypatch.setattr(install, "installed_distributions", lambda: both)
    mixed = install.mixed_install()
    assert "both paddlepaddle 3.3.1 and paddlepaddle-gpu 3.2.0 are installed" in mixed
    problem = install.gpu_build_problem(False, "3.3.1")
    assert problem.startswith("--device gpu needs a CUDA build of Paddle, this is paddle 3.3.1")
    assert mixed in problem and problem.endswith("or use --device cpu")
    assert install.gpu_build_problem(True, "3.2.0") is None
    with caplog.at_level(logging.WARNING, logger="train.device"):
        use_device("cpu")
    assert mixed in caplog.text
    monkeypatch.setattr(install, "installed_distributions", lambda: {"paddlepaddle": "3.3.1"})
    assert install.mixed_install() is None
    assert "install paddlepaddle-gpu from Paddle's package index" in install.gpu_build_problem(
        False, "3.3.1"
    )
