"""The README's Python example runs as written (from the repository root)."""

import re

from conftest import ROOT


def test_readme_python_example_runs(monkeypatch, capsys):
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "README has no Python example"
    monkeypatch.chdir(ROOT)
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "NCHW" in out and "ExecutionProvider" in out


def test_readme_first_commands_match_ci():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    commands = re.findall(r"```bash\n(.*?)\n```", readme, flags=re.S)[:2]
    assert len(commands) == 2
    for command in commands:
        assert command in ci, f"README command not run by .ci/run: {command}"


def test_readme_target_kind_example_runs(tmp_path):
    """The shell example of the target section, run in a scratch folder beside the models."""
    import os
    import subprocess
    import sys

    readme = (ROOT / "README.md").read_text()
    block = next(b for b in re.findall(r"```bash\n(.*?)```", readme, flags=re.S) if "seg.onnx" in b)
    (tmp_path / "models").symlink_to(ROOT / "models")
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ.get('PATH', '')}"}
    run = subprocess.run(["bash", "-e", "-c", block], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    for line in ("gradcam: target box=4,4,24,24 class [1]", "lrp: target predicted class [2]",
                 "integrated_gradients: target sequence class [-1]", "gradcam: target box=10,objectness class ["):
        assert line in run.stdout, run.stdout
