"""Bad input gets one line naming the file or key and what to do, exit code 2, no traceback, nothing left behind.

One row per case: config files, checkpoints, adapter directories, data roots, media, caches and devices."""
import json
import shutil

import numpy as np
import pytest

from helpers import FIXTURES
from molt.app.cli import main
from molt.data.media import write_clip

FIXTURE_V1 = FIXTURES / "adapters_v1"


@pytest.fixture(scope="module")
def world(ave_data, ave_run, tmp_path_factory):
    """The session's small AVE root (8 classes) and 1-epoch run on it, and broken copies of its files."""
    root = tmp_path_factory.mktemp("bad_input")
    data, run = ave_data, ave_run
    paths = {"data": data, "run": run, "runs": run.parents[1], "root": root,
             "video": next((data / "AVE").glob("*.mp4"))}
    ckpt = run / "checkpoints" / "last.ckpt"
    paths["truncated_ckpt"] = root / "truncated.ckpt"
    paths["truncated_ckpt"].write_bytes(ckpt.read_bytes()[:5000])
    adapters = root / "adapters_bad_weights"
    shutil.copytree(run / "adapters" / "best", adapters)
    weights = adapters / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:50])
    paths["truncated_adapters"] = adapters
    adapters = root / "adapters_bad_json"
    shutil.copytree(run / "adapters" / "best", adapters)
    (adapters / "adapter_config.json").write_text('{"format_version": ')
    paths["corrupt_config_adapters"] = adapters
    paths["silent_film"] = _video_without_audio(root / "silent_film.mp4")
    paths["blink"] = root / "blink.mp4"
    write_clip(paths["blink"], np.zeros((3, 32, 32, 3), dtype=np.uint8), np.zeros(8000, dtype=np.float32), fps=5,
               sample_rate=16000)
    paths["not_a_video"] = root / "notes.mp4"
    paths["not_a_video"].write_bytes(b"this is not a video" * 100)
    configs = {
        "wrong_type.yaml": "base: ave_molt_tiny\nmethod_config:\n  num_tokens: four\n",
        "wrong_trainer_type.yaml": "base: ave_molt_tiny\ntrainer:\n  max_epochs: ten\n",
        "unknown_method_key.yaml": "base: ave_molt_tiny\nmethod_config:\n  num_tokenz: 4\n",
        "unknown_head_key.yaml": "base: ave_molt_tiny\nhead:\n  hiden_dim: 4\n",
        "not_yaml.yaml": "task: ave\nmethod_config: [unclosed\n",
        "other_tokens.yaml": "base: ave_molt_tiny\nmethod_config:\n  num_tokens: 2\n",
    }
    for name, text in configs.items():
        (root / name).write_text(text)
        paths[name.removesuffix(".yaml")] = root / name
    paths["nan_cache"] = _cache_with_a_nan_chunk(data, root / "nan_cache")
    paths["nan_extracted"] = _as_if_extracted(paths["nan_cache"], root / "nan_extracted")
    return paths


def _cache_with_a_nan_chunk(data, cache):
    """A feature cache of the session's data whose validation chunk's first file was overwritten with NaN (same
    shape and size, as a disk or a script could leave it; its recorded CRC-32 no longer matches)."""
    assert main(["--quiet", "extract", "ave", "--data", str(data), "--out", str(cache), "--dtype", "float32",
                 "--device", "cpu"]) == 0
    chunk = sorted((cache / "val" / "chunk_00000").glob("*.npy"))[0]
    values = np.load(chunk)
    np.save(chunk, np.full_like(values, np.nan))
    return cache


def _as_if_extracted(cache, copy):
    """A copy of ``cache`` whose records match its NaN file, as if the extraction had written those values."""
    from molt.features.chunks import file_crc32

    shutil.copytree(cache, copy)
    chunk = copy / "val" / "chunk_00000"
    done = json.loads((chunk / "done.json").read_text())
    for name, record in done["files"].items():
        record["crc32"] = file_crc32(chunk / name)
    (chunk / "done.json").write_text(json.dumps(done))
    return copy


def _video_without_audio(path):
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=4)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        for _ in range(8):
            frame = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), dtype=np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _cases():
    d = "{data}"
    return [
        ("config value of the wrong type", ["train", "ave", "--data", d, "--config", "{wrong_type}"],
         ["{wrong_type}", "method_config: num_tokens must be int", "'four'"]),
        ("trainer value of the wrong type", ["train", "ave", "--data", d, "--config", "{wrong_trainer_type}"],
         ["{wrong_trainer_type}", "trainer: max_epochs must be int", "'ten'"]),
        ("unknown key under method_config", ["train", "ave", "--data", d, "--config", "{unknown_method_key}"],
         ["{unknown_method_key}: method_config", "num_tokenz", "valid keys"]),
        ("unknown head option", ["train", "ave", "--data", d, "--config", "{unknown_head_key}"],
         ["{unknown_head_key}: head", "hiden_dim", "accepted"]),
        ("config that is not YAML", ["train", "ave", "--data", d, "--config", "{not_yaml}"],
         ["{not_yaml}", "not valid YAML"]),
        ("config file that does not exist", ["train", "ave", "--data", d, "--config", "{root}/missing.yaml"],
         ["{root}/missing.yaml", "not found"]),
        ("config preset that does not exist", ["train", "ave", "--data", d, "--config", "ave_molt_huge"],
         ["ave_molt_huge", "available"]),
        ("resume from a truncated checkpoint", ["train", "ave", "--data", d, "--out", "{runs}",
                                                "--resume", "{truncated_ckpt}"],
         ["{truncated_ckpt}", "corrupt or truncated"]),
        ("resume from a missing checkpoint", ["train", "ave", "--data", d, "--resume", "{root}/nope.ckpt"],
         ["{root}/nope.ckpt", "not found"]),
        ("resume with another config", ["train", "ave", "--data", d, "--out", "{runs}", "--config",
                                        "{other_tokens}", "--resume", "{run}/checkpoints/last.ckpt"],
         ["{run}/checkpoints/last.ckpt", "method_config.num_tokens: checkpoint has 4, this run has 2"]),
        ("eval of a truncated checkpoint", ["eval", "ave", "--data", d, "--checkpoint", "{truncated_ckpt}"],
         ["{truncated_ckpt}", "corrupt or truncated"]),
        ("eval of truncated adapter weights", ["eval", "ave", "--data", d, "--checkpoint", "{truncated_adapters}"],
         ["{truncated_adapters}/adapter_model.safetensors", "damaged or truncated"]),
        ("eval of a corrupt adapter config", ["eval", "ave", "--data", d, "--checkpoint",
                                              "{corrupt_config_adapters}"],
         ["{corrupt_config_adapters}/adapter_config.json", "not valid JSON"]),
        ("eval on data with other classes", ["eval", "ave", "--data", d, "--checkpoint", str(FIXTURE_V1)],
         [str(FIXTURE_V1), "num_classes", "model has 3", "data has 8"]),
        ("eval of another task's model", ["eval", "avs", "--data", d, "--checkpoint", "{run}/adapters/best"],
         ["{run}/adapters/best", "trained for task 'ave', not 'avs'"]),
        ("eval with a test file the task lacks", ["eval", "ave", "--data", d, "--checkpoint", "{run}/adapters/best",
                                                  "--test-json", "original"],
         ["task 'ave' has no test file 'original'"]),
        ("predict on a missing video", ["predict", "ave", "--checkpoint", "{run}/adapters/best", "--video",
                                        "{root}/none.mp4"],
         ["{root}/none.mp4"]),
        ("predict on a file that is not a video", ["predict", "ave", "--checkpoint", "{run}/adapters/best",
                                                   "--video", "{not_a_video}"],
         ["{not_a_video}"]),
        ("predict on a video without an audio track", ["predict", "ave", "--checkpoint", "{run}/adapters/best",
                                                       "--video", "{silent_film}"],
         ["{silent_film}", "no audio track"]),
        ("predict on a clip shorter than 1 s", ["predict", "ave", "--checkpoint", "{run}/adapters/best", "--video",
                                                "{blink}"],
         ["{blink}", "too short", "at least 1 s"]),
        ("a question without its task", ["predict", "ave", "--checkpoint", "{run}/adapters/best", "--video",
                                         "{video}", "--question", "Where is the performance?"],
         ["--question applies to avqa only, not to ave"]),
        ("a question answering model asked nothing", ["predict", "avqa", "--checkpoint", "{run}/adapters/best",
                                                      "--video", "{video}"],
         ["avqa needs --question"]),
        ("train on a missing data root", ["train", "ave", "--data", "{root}/nowhere"],
         ["{root}/nowhere", "Annotations.txt"]),
        ("train on a folder of another task", ["train", "avvp", "--data", d],
         ["{data}", "LLP"]),
        ("a GPU asked for on a machine without one", ["train", "ave", "--data", d, "--accelerator", "gpu",
                                                      "--out", "{root}/gpu_runs"],
         ["--accelerator gpu", "no CUDA GPU", "--accelerator cpu"]),
        ("a feature cache that does not exist", ["train", "ave", "--data", d, "--features", "{root}/no_cache",
                                                 "--out", "{root}/cache_runs"],
         ["{root}/no_cache", "molt extract"]),
        ("a feature cache whose validation chunk holds NaN", ["train", "ave", "--data", d, "--features",
                                                               "{nan_cache}", "--out", "{root}/cache_runs"],
         ["{nan_cache}/val/chunk_00000/", "CRC-32 mismatch", "row 0 (clip 0 of split 'val') holds NaN or Inf",
          "--verify"]),
        ("a feature cache extracted with NaN", ["train", "ave", "--data", d, "--features", "{nan_extracted}",
                                                 "--out", "{root}/cache_runs"],
         ["{nan_extracted}/val/chunk_00000/", "row 0 (clip 0 of split 'val') holds NaN or Inf",
          "the extraction wrote these values", "delete {nan_extracted}/val/chunk_00000"]),
        ("an --out inside a file", ["train", "ave", "--data", d, "--out", "{video}/runs"],
         ["--out {video}/runs", "is not a directory"]),
        ("caching an in-block method", ["extract", "ave", "--data", d, "--out", "{root}/cache", "--method",
                                        "lavish"],
         ["lavish", "nothing to cache"]),
        ("an unknown setting", ["prepare", "avs", "--data", d, "--setting", "s5"],
         ["'s5'", "s4, ms3"]),
        ("a prepare option of another task", ["prepare", "ave", "--data", d, "--duplicates", "error"],
         ["--duplicates applies to avqa only, not to ave"]),
        ("audio weights that do not exist", ["train", "ave", "--data", d, "--config", "ave_molt_paper",
                                             "--audio-weights", "{root}/htsat.ckpt", "--out", "{root}/w_runs"],
         ["{root}/htsat.ckpt"]),
        ("an unknown timm model", ["train", "ave", "--data", d, "--visual-backbone", "timm:vit_nosuch_patch16",
                                   "--visual-weights", "random", "--out", "{root}/w_runs"],
         ["unknown timm model 'vit_nosuch_patch16'", "close names"]),
        ("an hf folder that does not exist", ["train", "ave", "--data", d, "--audio-backbone", "hf:{root}/no_ast",
                                              "--out", "{root}/w_runs"],
         ["{root}/no_ast"]),
        ("an audio encoder on the visual side", ["train", "ave", "--data", d, "--visual-backbone", "hf:{root}/ast",
                                                 "--out", "{root}/w_runs"],
         ["hf backbones are audio encoders, not visual ones"]),
        ("the shared audio branch without a Swin-V2", ["train", "ave", "--data", d, "--backbone", "tiny-shared",
                                                       "--visual-backbone", "timm:test_vit", "--out",
                                                       "{root}/w_runs"],
         ["'shared'", "timm:test_vit"]),
        ("an in-block method on a backbone without sub-layers",
         ["train", "ave", "--data", d, "--config", "ave_molt_tiny", "--method", "lavish", "--visual-backbone",
          "timm:eva02_tiny_patch14_224", "--visual-weights", "random", "--out", "{root}/w_runs"],
         ["lavish", "timm:eva02_tiny_patch14_224", "does not expose"]),
    ]


@pytest.mark.parametrize("name, argv, expected", _cases(), ids=[case[0] for case in _cases()])
def test_bad_input_is_one_line_naming_the_file(world, name, argv, expected, caplog, capfd, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)      # where molt predict would put predictions/ by default
    fill = {key: str(value) for key, value in world.items()}
    argv = [arg.format(**fill) for arg in argv]
    runs_before = sorted(p.name for p in (world["runs"] / "ave_molt_tiny").iterdir())
    caplog.clear()
    assert main(argv) == 2, name
    errors = [record for record in caplog.records if record.levelname == "ERROR" and record.name == "molt"]
    assert len(errors) == 1, [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    message = errors[0].getMessage()
    for part in expected:
        assert part.format(**fill) in message, (name, message)
    captured = capfd.readouterr()
    assert "Traceback" not in captured.err + captured.out
    # nothing left behind: no new run version, no run folder for a run that never started
    assert sorted(p.name for p in (world["runs"] / "ave_molt_tiny").iterdir()) == runs_before
    for folder in ("gpu_runs", "cache_runs", "w_runs"):
        assert not (world["root"] / folder).exists()
    assert list(tmp_path.iterdir()) == []


def test_debug_shows_the_traceback(world, capfd):
    with pytest.raises(FileNotFoundError):
        main(["--debug", "train", "ave", "--data", str(world["root"] / "nowhere")])
    assert json.dumps(str(world["root"]))  # the world fixture is still usable
