"""The CLI as separate processes: `python -m molt --help`, the benchmark's one process per method, and the verbs
that must run without Lightning."""
import json
import subprocess
import sys
import textwrap

from helpers import FIXTURES
from molt.app.bench import run_efficiency

FIXTURE_V1 = FIXTURES / "adapters_v1"


def test_run_efficiency_spawns_one_process_per_method(tmp_path):
    table = run_efficiency("ave", "tiny", ("molt",), out_dir=tmp_path)
    assert [row["method"] for row in table.rows] == ["molt"]
    assert (tmp_path / "efficiency.md").is_file()


def test_molt_help_runs_as_a_program():
    out = subprocess.run([sys.executable, "-m", "molt.app.cli", "--help"], capture_output=True, text=True, check=True)
    assert "train" in out.stdout


def test_help_of_every_verb_imports_no_torch():
    """``molt --help`` and each ``molt VERB --help`` are instant: one process prints them all and checks that
    neither torch nor the tasks' code (heads, datasets) was imported."""
    script = textwrap.dedent("""
        import contextlib, io, sys
        from molt.app.cli import build_parser, main
        verbs = [None] + sorted(build_parser()._subparsers._group_actions[0].choices)
        for verb in verbs:
            with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):
                main(["--help"] if verb is None else [verb, "--help"])
            assert "usage: molt" in out.getvalue(), (verb, out.getvalue()[:200])
        heavy = sorted(name for name in sys.modules if name == "torch" or name.startswith(("molt.tasks.ave.head",
                       "molt.tasks.avs.head", "molt.methods", "molt.backbones", "lightning")))
        assert not heavy, heavy
        print(len(verbs))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert int(out.stdout.split()[-1]) > 10


def test_eval_predict_extract_analyze_params_do_not_import_lightning(tmp_path):
    """One process runs each library verb for real (on the format-1 fixture model and generated clips) and then
    checks that Lightning was never imported."""
    script = textwrap.dedent(f"""
        import sys
        from molt.app.cli import main
        from molt.tasks.ave import generate_ave
        data = {str(tmp_path / "ave")!r}
        generate_ave(data, num_videos=6, seed=0, num_classes=3, workers=1, show_progress=False)
        checkpoint = {str(FIXTURE_V1)!r}
        video = next(__import__("pathlib").Path(data, "AVE").glob("*.mp4"))
        steps = [
            ["prepare", "ave", "--data", data, "--workers", "1"],
            ["eval", "ave", "--data", data, "--checkpoint", checkpoint, "--out", {str(tmp_path / "eval")!r}],
            ["predict", "ave", "--checkpoint", checkpoint, "--video", str(video), "--out", {str(tmp_path / "p")!r}],
            ["extract", "ave", "--data", data, "--out", {str(tmp_path / "cache")!r}, "--splits", "test",
             "--accelerator", "cpu"],
            ["analyze", "layers", "ave", "--data", data, "--clips", "2", "--out", {str(tmp_path / "layers")!r}],
            ["analyze", "tokens", "ave", "--data", data, "--checkpoint", checkpoint, "--clips", "1",
             "--out", {str(tmp_path / "tokens")!r}],
            ["params", "avvp"],
        ]
        for argv in steps:
            code = main(argv)
            assert code == 0, (argv, code)
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("lightning", "pytorch_lightning"))
        assert not loaded, loaded[:5]
        print("OK")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and done.stdout.strip().endswith("OK"), done.stdout[-2000:] + done.stderr[-4000:]
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["task"] == "ave" and 0.0 <= metrics["accuracy"] <= 1.0 and metrics["figures"]
    assert (tmp_path / "layers" / "layer_similarity.png").is_file()
    assert (tmp_path / "p" / "timeline.png").is_file() and (tmp_path / "p" / "predictions.json").is_file()
    assert (tmp_path / "cache" / "test" / "split.json").is_file()


def test_train_piped_to_a_file_logs_every_epoch(tmp_path):
    """A batch job's view: molt train with its output piped shows one line per epoch with the validation score,
    elapsed time and ETA, and none of Lightning's start-up lines."""
    from molt.tasks.ave import generate_ave

    data = tmp_path / "ave"
    generate_ave(data, num_videos=12, seed=1, workers=1, show_progress=False)
    done = subprocess.run([sys.executable, "-m", "molt", "train", "ave", "--data", str(data), "--epochs", "3",
                           "--out", str(tmp_path / "runs"), "--workers", "0"], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    log = done.stdout + done.stderr
    epochs = [line for line in log.splitlines() if " molt.app.train: epoch " in line and "step" not in line]
    assert [line.split(" molt.app.train: ")[1].split(":")[0] for line in epochs] == \
        ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    assert all("val/accuracy" in line and "elapsed, ETA" in line for line in epochs)
    assert "GPU available" not in log and "Seed set to" not in log
    # then a summary of a few lines (the whole result is result.json, or --json), not a JSON dump
    run = tmp_path / "runs" / "ave_molt_tiny" / "version_0"
    summary = dict(line.split("  ", 1) for line in done.stdout.strip().splitlines())
    assert summary["adapters"].strip() == str(run / "adapters" / "best")
    assert summary["test"].strip().startswith("Acc. ") and "{" not in done.stdout
    assert str(run / "result.json") in summary["everything"]
