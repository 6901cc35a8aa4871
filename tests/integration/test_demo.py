import json

from molt.app.cli import main


def test_demo_runs_end_to_end_from_the_cli(tmp_path, capsys):
    assert main(["demo", "--workdir", str(tmp_path), "--videos", "24", "--epochs", "1"]) == 0
    printed = capsys.readouterr().out
    assert "test segment accuracy (MoLT)" in printed and "majority-class accuracy" in printed
    summary = json.loads((tmp_path / "demo.json").read_text())
    assert 0.0 <= summary["test"]["accuracy"] <= 1.0
    assert summary["trainable_params"] < summary["total_params"]
    assert (tmp_path / "runs").is_dir()
    assert list(tmp_path.glob("runs/*/version_0/adapters/best/adapter_model.safetensors"))
    assert (tmp_path / "evaluations" / "test" / "timelines.png").is_file()
    assert str(tmp_path) in printed       # it says where it wrote
