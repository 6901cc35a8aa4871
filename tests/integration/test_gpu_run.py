"""benchmarks/gpu_run.py, the one command of a lent GPU, as a dry run on the CPU (tiny backbones; AVE, AVS and
MUSIC-AVQA in float32; the five methods in gpu_check): every stage runs, every file it promises is written with the
expected stages, steps and rows; a budget too small for any stage skips them all and still writes the report; and
gpu_check.py turns an out-of-memory row into a row saying so and goes on."""
import importlib.util
import json
import re
import subprocess
import sys
import zipfile

import pytest
import torch

from helpers import ROOT

FILES = {"gpu_run.json", "gpu_run.md", "pytest.txt", "cli.log", "nvidia-smi.txt", "gpu_check.json", "gpu_check.md"}
STEPS = ["synth", "train 32-true", "eval", "predict", "extract", "train from features"]
METHODS = ["molt", "mettle", "lavish", "dgsct", "avmoe"]


def _gpu_run(out, *extra):
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_run.py"), "--device", "cpu", "--backbone",
                           "tiny", "--out", str(out), *extra], capture_output=True, text=True, timeout=1500)


def _gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dry_run_writes_every_result(tmp_path):
    done = _gpu_run(tmp_path, "--precisions", "32-true", "--steps", "2", "--budget", "1200")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert {p.name for p in tmp_path.iterdir()} == FILES and all(p.is_file() for p in tmp_path.iterdir())
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", name) for name in FILES)

    report = json.loads((tmp_path / "gpu_run.json").read_text())
    stages = report["stages"]
    assert list(stages) == ["setup", "pytest", "cli", "gpu_check"]
    assert {name: stage["status"] for name, stage in stages.items()} == dict.fromkeys(stages, "ok")
    assert stages["setup"]["cuda_available"] is False and stages["setup"]["missing_modules"] == []
    # on a CPU every CUDA test is collected and skipped, none fails
    summary = stages["pytest"]["summary"]
    assert re.search(r"\d+ skipped", summary) and "failed" not in summary and "error" not in summary
    assert "needs a CUDA GPU" in (tmp_path / "pytest.txt").read_text()

    steps = stages["cli"]["steps"]
    assert [(s["task"], s["step"]) for s in steps] == [
        (task, step) for task in ("ave", "avs", "avqa")
        for step in (STEPS[:3] + ["eval last.ckpt (cpu)"] + STEPS[3:] if task == "ave" else STEPS)]
    assert all(s["status"] == "ok" and s["seconds"] > 0 for s in steps)
    by_name = {(s["task"], s["step"]): s for s in steps}
    for task, metric in (("ave", "accuracy"), ("avs", "mIoU"), ("avqa", "accuracy")):
        for name in ("train 32-true", "train from features"):
            assert by_name[task, name]["global_step"] > 0 and 0.0 <= by_name[task, name]["test"][metric] <= 1.0
        assert by_name[task, "eval"]["metrics"][metric] == pytest.approx(
            by_name[task, "train 32-true"]["test"][metric], abs=1e-6)
        assert "--accelerator cpu" in by_name[task, "extract"]["argv"]
        assert "--features" in by_name[task, "train from features"]["argv"]
        assert by_name[task, "predict"]["files"] >= 2

    check = json.loads((tmp_path / "gpu_check.json").read_text())
    assert [(r["method"], r["batch_clips"], r["precision"]) for r in check["training"]] == [
        (method, 1, "32-true") for method in METHODS]
    assert all(r["peak_bytes"] > 0 and r["median_step_s"] > 0 for r in check["training"])
    assert check["steps"] == 2 and check["extraction"]["clips"] == 8
    assert stages["gpu_check"]["rows_measured"] == 5 and stages["gpu_check"]["rows_skipped"] == 0

    markdown = (tmp_path / "gpu_run.md").read_text()
    assert "| cli | ok |" in markdown and "| avqa | train from features | ok |" in markdown
    assert "| avmoe | 1 | 32-true | float32 |" in (tmp_path / "gpu_check.md").read_text()
    assert all(f"===== {task}: rc 0" in (tmp_path / "cli.log").read_text() for task in ("ave", "avs", "avqa"))


def test_a_budget_too_small_skips_every_stage_and_still_reports(tmp_path):
    done = _gpu_run(tmp_path, "--budget", "1")
    assert done.returncode == 1
    stages = json.loads((tmp_path / "gpu_run.json").read_text())["stages"]
    assert [stages[name]["status"] for name in ("pytest", "cli", "gpu_check")] == ["skipped: time budget"] * 3
    assert "| gpu_check | skipped: time budget |" in (tmp_path / "gpu_run.md").read_text()
    assert (tmp_path / "nvidia-smi.txt").is_file()


def test_gpu_check_writes_an_out_of_memory_row_and_goes_on(tmp_path, monkeypatch):
    gpu_check = _gpu_check()
    assert gpu_check._failure(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")) == \
        "out of memory"
    assert gpu_check._failure(ValueError("bad\nsecond line")) == "ValueError: bad"
    measure = gpu_check._training_steps

    def lavish_runs_out(model, method, *args, **kwargs):
        if method == "lavish":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB")
        return measure(model, method, *args, **kwargs)

    monkeypatch.setattr(gpu_check, "_training_steps", lavish_runs_out)
    gpu_check.main(["--backbone", "tiny", "--device", "cpu", "--methods", "lavish,molt", "--batches", "1",
                    "--precisions", "32-true", "--half-backbones", "", "--steps", "1", "--extract-clips", "0",
                    "--out", str(tmp_path)])
    rows = json.loads((tmp_path / "gpu_check.json").read_text())["training"]
    assert [r["method"] for r in rows] == ["lavish", "molt"]
    assert rows[0]["error"] == "out of memory" and "peak_bytes" not in rows[0]
    assert rows[1]["peak_bytes"] > 0 and "error" not in rows[1]
    assert "| lavish | 1 | 32-true | float32 | out of memory | out of memory |" in \
        (tmp_path / "gpu_check.md").read_text()


def test_wheels_the_image_lacks_are_installed_into_the_site_folder(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("gpu_run", ROOT / "benchmarks" / "gpu_run.py")
    gpu_run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_run)
    checkout, site = tmp_path / "checkout", tmp_path / "site"
    (checkout / ".whl").mkdir(parents=True)
    files = {"gpurunfake/__init__.py": "ANSWER = 42\n",
             "gpurunfake-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: gpurunfake\nVersion: 1.0\n",
             "gpurunfake-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                               "Tag: py3-none-any\n"}
    files["gpurunfake-1.0.dist-info/RECORD"] = "".join(f"{name},,\n" for name in files) + \
        "gpurunfake-1.0.dist-info/RECORD,,\n"
    with zipfile.ZipFile(checkout / ".whl" / "gpurunfake-1.0-py3-none-any.whl", "w") as wheel:
        for name, text in files.items():
            wheel.writestr(name, text)
    # pytest's own wheel is there too: importable already, so left alone
    (checkout / ".whl" / "pytest-9.0.3-py3-none-any.whl").write_bytes(b"not read")
    monkeypatch.setattr(gpu_run, "ROOT", checkout)
    monkeypatch.setattr(gpu_run, "SITE", site)
    installed = gpu_run.install_wheels()
    assert installed["status"] == "installed" and installed["wheels"] == ["gpurunfake-1.0-py3-none-any.whl"]
    assert (site / "gpurunfake" / "__init__.py").read_text() == "ANSWER = 42\n"
    assert str(site) in gpu_run._environment()["PYTHONPATH"].split(":")
