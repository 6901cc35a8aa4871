"""Every verb writes under --out or, by default, under the current directory: never into the dataset root or the
adapters folder it reads."""
from pathlib import Path

from molt.app.cli import main
from molt.app.evaluate import checkpoint_label


def test_a_checkpoint_is_named_by_its_run_version_and_kind(tmp_path):
    run = tmp_path / "runs" / "ave_molt_tiny" / "version_3"
    assert checkpoint_label(run / "adapters" / "best") == "ave_molt_tiny_version_3_best"
    assert checkpoint_label(run / "checkpoints" / "last.ckpt") == "ave_molt_tiny_version_3_last"
    assert checkpoint_label(tmp_path / "my_adapters") == "my_adapters"
    assert checkpoint_label(Path("model.ckpt")) == "model"


def _files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*"))


def test_eval_and_analyze_write_under_the_current_directory(ave_data, ave_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    adapters = ave_run / "adapters" / "best"
    adapters_before, data_before = _files(adapters), _files(ave_data)
    assert main(["--quiet", "eval", "ave", "--data", str(ave_data), "--checkpoint", str(adapters)]) == 0
    assert (tmp_path / "evaluations" / f"{checkpoint_label(adapters)}_test" / "metrics.json").is_file()
    assert main(["--quiet", "analyze", "tokens", "ave", "--data", str(ave_data), "--checkpoint", str(adapters),
                 "--clips", "1"]) == 0
    assert (tmp_path / "analysis" / f"tokens_{checkpoint_label(adapters)}" / "tokens.json").is_file()
    assert main(["--quiet", "analyze", "layers", "ave", "--data", str(ave_data), "--clips", "2"]) == 0
    assert list((tmp_path / "analysis" / "layers_ave").iterdir())
    assert _files(adapters) == adapters_before and _files(ave_data) == data_before
