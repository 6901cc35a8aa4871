"""Bad input gets one line naming the file or key and what to do, exit code 2, no traceback, nothing left behind.

One row per case: config files, checkpoints, adapter directories, data roots, media, caches and devices."""
import json
import shutil

import numpy as np
import pytest
import torch

from helpers import FIXTURES, refused_in_one_line, video_without_audio
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
    paths["silent_film"] = video_without_audio(root / "silent_film.mp4")
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
        "epochs_at_the_top.yaml": "base: ave_molt_tiny\nepochz: 5\n",
        "lr_at_the_top.yaml": "base: ave_molt_tiny\nlr: 0.01\n",
    }
    configs.update({
        "negative_epochs.yaml": "base: ave_molt_tiny\ntrainer:\n  max_epochs: -5\n",
        "negative_lr.yaml": "base: ave_molt_tiny\noptim:\n  lr: -0.1\n",
        "dropout_too_big.yaml": "base: ave_molt_tiny\nmethod_config:\n  dropout: 1.5\n",
        "cycle_a.yaml": "base: cycle_b.yaml\n",
        "cycle_b.yaml": "base: cycle_a.yaml\n",
        "base_not_a_name.yaml": "base: [ave_molt_tiny]\n",
        "negative_image_size.yaml": "base: ave_molt_tiny\nbackbone: {visual: swinv2:swinv2_tiny_test, audio: "
                                    "htsat:htsat_tiny, visual_options: {img_size: -5}}\n",
        "word_for_seconds.yaml": "base: ave_molt_tiny\nbackbone: {visual: swinv2:swinv2_tiny_test, audio: "
                                 "htsat:htsat_tiny, audio_options: {clip_seconds: ten}}\n",
    })
    for name, text in configs.items():
        (root / name).write_text(text)
        paths[name.removesuffix(".yaml")] = root / name
    paths["not_utf8"] = root / "not_utf8.yaml"
    paths["not_utf8"].write_bytes(b"base: ave_molt_tiny\ntask: \xff\n")
    paths["a_file"] = root / "a_file.txt"
    paths["a_file"].write_text("not a directory")
    for name, change in _ADAPTER_EDITS.items():
        adapters = root / f"adapters_{name}"
        shutil.copytree(run / "adapters" / "best", adapters)
        config = json.loads((adapters / "adapter_config.json").read_text())
        change(config)
        (adapters / "adapter_config.json").write_text(json.dumps(config))
        paths[f"adapters_{name}"] = adapters
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    state["molt_config"]["audio_weights"] = "/etc/passwd"
    paths["ckpt_weights_outside"] = root / "weights_outside.ckpt"
    torch.save(state, paths["ckpt_weights_outside"])
    for name, damage in _PREPARED_DAMAGE.items():
        prepared = root / f"prepared_{name}"
        shutil.copytree(data / "prepared", prepared)
        damage(prepared)
        paths[f"prepared_{name}"] = prepared
    for name, files in _ANNOTATION_ROOTS.items():
        folder = root / name
        for file, content in files.items():
            (folder / file).parent.mkdir(parents=True, exist_ok=True)
            (folder / file).write_bytes(content if isinstance(content, bytes) else content.encode())
        paths[name] = folder
    paths["nan_cache"] = _cache_with_a_nan_chunk(data, root / "nan_cache")
    paths["nan_extracted"] = _as_if_extracted(paths["nan_cache"], root / "nan_extracted")
    return paths


def _experiment(change):
    return lambda config: change(config["extra_config"]["experiment"])


_ADAPTER_EDITS = {
    "format_string": lambda config: config.update(format_version="2"),
    "num_classes_many": lambda config: config["extra_config"]["task_options"].update(num_classes="many"),
    "weights_traversal": _experiment(lambda e: e.update(audio_weights="../../../../../../../../../../etc/passwd")),
    "weights_absolute": _experiment(lambda e: e.update(visual_weights="/etc/passwd")),
    "negative_epochs": _experiment(lambda e: e["trainer"].update(max_epochs=-5)),
}


def _truncate(path, keep=1000):
    path.write_bytes(path.read_bytes()[:keep])


_PREPARED_DAMAGE = {
    "truncated_frames": lambda prepared: _truncate(prepared / "frames.npy"),
    "corrupt_index": lambda prepared: (prepared / "index.json").write_text('{"format": '),
    "index_without_rows": lambda prepared: (prepared / "index.json").write_text(json.dumps(
        {key: value for key, value in json.loads((prepared / "index.json").read_text()).items() if key != "rows"})),
}
_AVE_HEADER = "Category&VideoID&Quality&StartTime&EndTime\n"
_QUESTION = {"video_id": "00000093", "question_id": 1, "type": '["Audio", "Counting"]', "templ_values": '["violin"]',
             "question_content": "How many <Object> are there?", "question_deleted": 0, "anser": "two"}
_LLP_WEAK = "filename\tevent_labels\n"
_LLP_EVENTS = "filename\tonset\toffset\tevent_labels\n"
#: small annotation-only data roots, each with one fault (read before any video is looked for)
_ANNOTATION_ROOTS = {
    "ave_traversal": {"Annotations.txt": _AVE_HEADER + "Dog&../outside/secret&good&0&5\n",
                      "trainSet.txt": "Dog&../outside/secret&good&0&5\n"},
    "ave_not_utf8": {"Annotations.txt": b"Dog&abc&good&0&5\nDog&\xffbc&good&0&5\n",
                     "trainSet.txt": "Dog&abc&good&0&5\n"},
    "ave_unknown_label": {"Annotations.txt": _AVE_HEADER + "Dog&abc&good&0&5\n", "trainSet.txt": "Cat&abc&good&0&5\n"},
    "ave_empty": {"Annotations.txt": "", "trainSet.txt": ""},
    "ave_header_only": {"Annotations.txt": _AVE_HEADER, "trainSet.txt": ""},
    "ave_negative_time": {"Annotations.txt": _AVE_HEADER + "Dog&abc&good&-1&5\n", "trainSet.txt": ""},
    "ave_reversed_time": {"Annotations.txt": _AVE_HEADER + "Dog&abc&good&7&5\n", "trainSet.txt": ""},
    "ave_duplicate_category": {"Annotations.txt": _AVE_HEADER + "Dog&abc&good&0&5\n", "trainSet.txt": "",
                               "categories.txt": "Dog\nCat\nDog\n"},
    "avs_traversal": {"s4_meta_data.csv": "name,start,category,split\n../../x,0,dog,train\n"},
    "avs_category_traversal": {"s4_meta_data.csv": "name,start,category,split\nabc,0,..,train\n"},
    "avs_empty": {"s4_meta_data.csv": ""},
    "avs_duplicate": {"s4_meta_data.csv": "name,start,category,split\nabc,0,dog,train\nabc,0,dog,test\n"},
    "avqa_traversal": {"avqa-train.json": json.dumps([{**_QUESTION, "video_id": "../../etc/x"}])},
    "avqa_empty": {"avqa-train.json": ""},
    "avqa_not_a_list": {"avqa-train.json": json.dumps({"questions": [_QUESTION]})},
    "avqa_id_type": {"avqa-train.json": json.dumps([{**_QUESTION, "question_id": "1"}])},
    "avqa_video_type": {"avqa-train.json": json.dumps([{**_QUESTION, "video_id": ["00000093"]}])},
    "avqa_deleted_type": {"avqa-train.json": json.dumps([{**_QUESTION, "question_deleted": "no"}])},
    "avqa_duplicate_answer": {"avqa-train.json": json.dumps([_QUESTION]), "ans_vocab.txt": "two\nthree\ntwo\n"},
    "avvp_traversal": {"AVVP_train.csv": _LLP_WEAK + "..\\x_1_11\tSpeech\n"},
    "avvp_empty": {"AVVP_train.csv": ""},
    "avvp_unknown_label": {"AVVP_train.csv": _LLP_WEAK + "abcdefghijk_0_10\tNoSuch\n"},
    "avvp_reversed_clip": {"AVVP_train.csv": _LLP_WEAK + "abcdefghijk_20_10\tSpeech\n"},
    "avvp_negative_time": {"AVVP_train.csv": _LLP_WEAK + "abcdefghijk_0_10\tSpeech\n",
                           "AVVP_val_pd.csv": _LLP_WEAK + "bbcdefghijk_0_10\tSpeech\n",
                           "AVVP_eval_audio.csv": _LLP_EVENTS + "bbcdefghijk_0_10\t-1\t3\tSpeech\n",
                           "AVVP_eval_visual.csv": _LLP_EVENTS},
    "avvp_event_traversal": {"AVVP_train.csv": _LLP_WEAK + "abcdefghijk_0_10\tSpeech\n",
                             "AVVP_val_pd.csv": _LLP_WEAK + "bbcdefghijk_0_10\tSpeech\n",
                             "AVVP_eval_audio.csv": _LLP_EVENTS + "../b_0_10\t1\t3\tSpeech\n",
                             "AVVP_eval_visual.csv": _LLP_EVENTS},
}


def _cache_with_a_nan_chunk(data, cache):
    """A feature cache of the session's data whose validation chunk's first file was overwritten with NaN (same
    shape and size, as a disk or a script could leave it; its recorded CRC-32 no longer matches)."""
    assert main(["--quiet", "extract", "ave", "--data", str(data), "--out", str(cache), "--dtype", "float32",
                 "--accelerator", "cpu"]) == 0
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
        ("a misspelt config preset", ["train", "ave", "--data", d, "--config", "ave_molt_tinny"],
         ["'ave_molt_tinny'", "did you mean ave_molt_tiny?"]),
        ("a trainer key at the top of a config", ["train", "ave", "--data", d, "--config", "{epochs_at_the_top}"],
         ["{epochs_at_the_top}", "epochz", "did you mean trainer: max_epochs?"]),
        ("an optimiser key at the top of a config", ["train", "ave", "--data", d, "--config", "{lr_at_the_top}"],
         ["{lr_at_the_top}", "lr is a key of optim:"]),
        ("eval of a run folder", ["eval", "ave", "--data", d, "--checkpoint", "{run}"],
         ["{run} is a run folder", "pass --checkpoint {run}/adapters/best"]),
        ("predict with the runs of a preset", ["predict", "ave", "--checkpoint", "{run}/..", "--video", "{video}"],
         ["is a run folder", "version_0/adapters/best"]),
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
         ["{root}/nowhere does not exist", "the AVE release as you downloaded it"]),
        ("train on a folder of another task", ["train", "avvp", "--data", d],
         ["{data}", "LLP"]),
        ("a GPU asked for on a machine without one", ["train", "ave", "--data", d, "--accelerator", "gpu",
                                                      "--out", "{root}/gpu_runs"],
         ["--accelerator gpu", "no CUDA GPU", "--accelerator cpu"]),
        ("eval on a GPU the machine lacks", ["eval", "ave", "--data", d, "--checkpoint", "{run}/adapters/best",
                                             "--accelerator", "gpu", "--out", "{root}/eval_out"],
         ["--accelerator gpu", "no CUDA GPU", "--accelerator cpu"]),
        ("predict on a GPU the machine lacks", ["predict", "ave", "--checkpoint", "{run}/adapters/best", "--video",
                                                "{video}", "--accelerator", "cuda", "--out", "{root}/eval_out"],
         ["--accelerator cuda", "no CUDA GPU", "--accelerator cpu"]),
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
         ["--out {video}/runs", "is a file, not a directory"]),
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
        *_input_validation_cases(),
    ]


def _prepare(name, task="ave", *extra):
    return ["prepare", task, "--data", "{%s}" % name, "--out", "{root}/prepared_out", *extra]


def _input_validation_cases():
    """Issue U: numbers against their meaning, adapter config fields, paths in annotation files, messages that name
    the file (line, key) and the fix."""
    d = "{data}"
    best = "{run}/adapters/best"
    outside = "lies outside the current directory"
    return [
        ("a negative epoch count in YAML", ["train", "ave", "--data", d, "--config", "{negative_epochs}"],
         ["{negative_epochs}: trainer: max_epochs must be at least 1", "got -5", "correct it in {negative_epochs}"]),
        ("a negative learning rate in YAML", ["train", "ave", "--data", d, "--config", "{negative_lr}"],
         ["{negative_lr}: optim: lr must be at least 0", "got -0.1"]),
        ("a dropout of 1.5 in YAML", ["train", "ave", "--data", d, "--config", "{dropout_too_big}"],
         ["{dropout_too_big}: method_config: dropout must be in [0, 1)", "got 1.5"]),
        ("--epochs -1", ["train", "ave", "--data", d, "--epochs", "-1"],
         ["--epochs: max_epochs must be at least 1", "got -1", "pass --epochs with a value in that range"]),
        ("--epochs 0", ["train", "ave", "--data", d, "--epochs", "0"], ["--epochs: max_epochs must be at least 1"]),
        ("--lr -0.1", ["train", "ave", "--data", d, "--lr", "-0.1"], ["--lr: lr must be at least 0", "got -0.1"]),
        ("a base: cycle", ["train", "ave", "--data", d, "--config", "{cycle_a}"],
         ["base: cycle_a.yaml makes a cycle", "{cycle_a} -> {cycle_b} -> {cycle_a}", "remove one of these base:"]),
        ("a base: that is not a name", ["train", "ave", "--data", d, "--config", "{base_not_a_name}"],
         ["{base_not_a_name}: base must be the name of a preset or the path of a YAML file"]),
        ("a negative backbone option", ["train", "ave", "--data", d, "--config", "{negative_image_size}"],
         ["backbone: visual_options {{'img_size': -5}} cannot build swinv2:swinv2_tiny_test", "correct or remove"]),
        ("a word for a backbone number", ["train", "ave", "--data", d, "--config", "{word_for_seconds}"],
         ["backbone: audio_options {{'clip_seconds': 'ten'}} cannot build htsat:htsat_tiny", "correct or remove"]),
        ("a config that is not UTF-8", ["train", "ave", "--data", d, "--config", "{not_utf8}"],
         ["{not_utf8}:2: not UTF-8 text (byte 0xff", "save the config file as UTF-8"]),
        ("eval --out that is a file", ["eval", "ave", "--data", d, "--checkpoint", best, "--out", "{a_file}"],
         ["--out {a_file}", "is a file, not a directory"]),
        ("eval --out below a file", ["eval", "ave", "--data", d, "--checkpoint", best, "--out", "{a_file}/x"],
         ["--out {a_file}/x", "{a_file} is a file"]),
        ("predict --out that is a file", ["predict", "ave", "--checkpoint", best, "--video", "{video}", "--out",
                                          "{a_file}"],
         ["--out {a_file}", "is a file, not a directory"]),
        ("predict --json that is a directory", ["predict", "ave", "--checkpoint", best, "--video", "{video}",
                                                "--json", "{root}"],
         ["--json {root}", "a directory of that name exists"]),
        ("an adapter format version that is a string", ["eval", "ave", "--data", d, "--checkpoint",
                                                        "{adapters_format_string}"],
         ["{adapters_format_string}/adapter_config.json: format_version must be an integer, got '2'"]),
        ("a class count that is a string", ["eval", "ave", "--data", d, "--checkpoint", "{adapters_num_classes_many}"],
         ["{adapters_num_classes_many}/adapter_config.json: extra_config.task_options.num_classes must be int",
          "'many'"]),
        ("recorded weights that climb out", ["eval", "ave", "--data", d, "--checkpoint",
                                             "{adapters_weights_traversal}"],
         ["{adapters_weights_traversal}/adapter_config.json: extra_config.experiment.audio_weights", outside,
          "pass --audio-weights PATH"]),
        ("recorded weights at an absolute path", ["predict", "ave", "--checkpoint", "{adapters_weights_absolute}",
                                                  "--video", "{video}"],
         ["{adapters_weights_absolute}/adapter_config.json: extra_config.experiment.visual_weights '/etc/passwd'",
          outside, "pass --visual-weights PATH"]),
        ("recorded weights outside, in a training checkpoint", ["eval", "ave", "--data", d, "--checkpoint",
                                                                "{ckpt_weights_outside}"],
         ["{ckpt_weights_outside}: molt_config.audio_weights '/etc/passwd'", outside,
          "pass --audio-weights PATH"]),
        ("audio weights that are not a checkpoint", ["eval", "ave", "--data", d, "--checkpoint", best,
                                                     "--audio-weights", "{a_file}", "--out", "{root}/eval_out"],
         ["{a_file}: not a readable torch checkpoint", "pass the HTS-AT weights file"]),
        ("visual weights that are not a checkpoint", ["eval", "ave", "--data", d, "--checkpoint", best,
                                                      "--visual-weights", "{a_file}", "--out", "{root}/eval_out"],
         ["{a_file}: not a readable", "pass a timm or original Swin-V2 checkpoint file"]),
        ("a negative epoch count in an adapter config", ["eval", "ave", "--data", d, "--checkpoint",
                                                         "{adapters_negative_epochs}"],
         ["{adapters_negative_epochs}/adapter_config.json", "trainer: max_epochs must be at least 1"]),
        ("a truncated prepared array", ["eval", "ave", "--data", "{prepared_truncated_frames}", "--checkpoint", best,
                                        "--out", "{root}/eval_out"],
         ["{prepared_truncated_frames}/frames.npy cannot be read", "prepare the data again (`molt prepare ave"]),
        ("a corrupt prepared index", ["eval", "ave", "--data", "{prepared_corrupt_index}", "--checkpoint", best,
                                      "--out", "{root}/eval_out"],
         ["{prepared_corrupt_index}/index.json:1:12: not valid JSON", "prepare the data again"]),
        ("a prepared index without rows", ["eval", "ave", "--data", "{prepared_index_without_rows}", "--checkpoint",
                                           best, "--out", "{root}/eval_out"],
         ["{prepared_index_without_rows}/index.json: no rows", "prepare the data again"]),
        ("an AVE id that climbs out", _prepare("ave_traversal"),
         ["{ave_traversal}/Annotations.txt:2: VideoID '../outside/secret' is not a plain file name",
          "correct or remove that line"]),
        ("an AVE file that is not UTF-8", _prepare("ave_not_utf8"),
         ["{ave_not_utf8}/Annotations.txt:2: not UTF-8 text (byte 0xff", "save the AVE annotation file as UTF-8"]),
        ("an unknown AVE category", _prepare("ave_unknown_label"),
         ["{ave_unknown_label}/trainSet.txt:1: unknown category 'Cat'", "add the category there"]),
        ("an empty AVE annotation file", _prepare("ave_empty"), ["{ave_empty}/Annotations.txt: no annotation line"]),
        ("a header-only AVE annotation file", _prepare("ave_header_only"),
         ["{ave_header_only}/Annotations.txt: no annotation line"]),
        ("a negative AVE time", _prepare("ave_negative_time"),
         ["{ave_negative_time}/Annotations.txt:2: expected 0 <= StartTime <= EndTime <= 10, got -1 and 5",
          "correct or remove that line"]),
        ("an AVE event that ends before it starts", _prepare("ave_reversed_time"),
         ["{ave_reversed_time}/Annotations.txt:2: expected 0 <= StartTime <= EndTime", "got 7 and 5"]),
        ("an AVE category listed twice", _prepare("ave_duplicate_category"),
         ["{ave_duplicate_category}/categories.txt:3: 'Dog' already listed on line 1"]),
        ("an AVSBench clip name that climbs out", _prepare("avs_traversal", "avs"),
         ["{avs_traversal}/s4_meta_data.csv:2: clip name '../../x' is not a plain file name"]),
        ("an AVSBench category that climbs out", _prepare("avs_category_traversal", "avs"),
         ["{avs_category_traversal}/s4_meta_data.csv:2: category '..' is not a plain file name"]),
        ("an empty AVSBench metadata file", _prepare("avs_empty", "avs"),
         ["{avs_empty}/s4_meta_data.csv: empty metadata file"]),
        ("an AVSBench clip listed twice", _prepare("avs_duplicate", "avs"),
         ["{avs_duplicate}/s4_meta_data.csv:3: clip 'abc' already listed on line 2", "correct or remove that line"]),
        ("a MUSIC-AVQA video id that climbs out", _prepare("avqa_traversal", "avqa"),
         ["{avqa_traversal}/avqa-train.json record 0 (question_id 1): video_id '../../etc/x' is not a plain",
          "correct or remove that record"]),
        ("an empty MUSIC-AVQA file", _prepare("avqa_empty", "avqa"),
         ["{avqa_empty}/avqa-train.json:1:1: not valid JSON", "MUSIC-AVQA question list"]),
        ("a MUSIC-AVQA file that is not a list", _prepare("avqa_not_a_list", "avqa"),
         ["{avqa_not_a_list}/avqa-train.json: expected a JSON array of question records, got dict"]),
        ("a MUSIC-AVQA question id that is a string", _prepare("avqa_id_type", "avqa"),
         ["{avqa_id_type}/avqa-train.json record 0: question_id must be an integer, got '1'"]),
        ("a MUSIC-AVQA video id that is a list", _prepare("avqa_video_type", "avqa"),
         ["{avqa_video_type}/avqa-train.json record 0 (question_id 1): video_id must be a string"]),
        ("a MUSIC-AVQA deletion flag that is a word", _prepare("avqa_deleted_type", "avqa"),
         ["{avqa_deleted_type}/avqa-train.json record 0 (question_id 1): question_deleted must be 0 or 1"]),
        ("a MUSIC-AVQA answer listed twice", _prepare("avqa_duplicate_answer", "avqa"),
         ["{avqa_duplicate_answer}/ans_vocab.txt:3: 'two' already listed on line 1"]),
        ("an LLP filename that climbs out", _prepare("avvp_traversal", "avvp"),
         ["{avvp_traversal}/AVVP_train.csv:2: filename '..\\\\x_1_11' is not a plain file name"]),
        ("an LLP eval filename that climbs out", _prepare("avvp_event_traversal", "avvp"),
         ["{avvp_event_traversal}/AVVP_eval_audio.csv:2: filename '../b_0_10' is not a plain file name"]),
        ("an empty LLP file", _prepare("avvp_empty", "avvp"),
         ["{avvp_empty}/AVVP_train.csv:1: expected a tab-separated header"]),
        ("an unknown LLP category", _prepare("avvp_unknown_label", "avvp"),
         ["{avvp_unknown_label}/AVVP_train.csv:2: unknown category 'NoSuch'", "add the category to categories.txt"]),
        ("an LLP clip that ends before it starts", _prepare("avvp_reversed_clip", "avvp"),
         ["{avvp_reversed_clip}/AVVP_train.csv:2: the clip 'abcdefghijk_20_10' ends (10 s) before it starts (20 s)"]),
        ("a negative LLP onset", _prepare("avvp_negative_time", "avvp"),
         ["{avvp_negative_time}/AVVP_eval_audio.csv:2: expected onset and offset in 0..10, got -1 and 3",
          "correct or remove that line"]),
    ]


@pytest.mark.parametrize("name, argv, expected", _cases(), ids=[case[0] for case in _cases()])
def test_bad_input_is_one_line_naming_the_file(world, name, argv, expected, caplog, capfd, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)      # where molt predict would put predictions/ by default
    fill = {key: str(value) for key, value in world.items()}
    argv = [arg.format(**fill) for arg in argv]
    runs_before = sorted(p.name for p in (world["runs"] / "ave_molt_tiny").iterdir())
    message = refused_in_one_line(argv, caplog, capfd)
    for part in expected:
        assert part.format(**fill) in message, (name, message)
    # nothing left behind: no new run version, no run folder for a run that never started
    assert sorted(p.name for p in (world["runs"] / "ave_molt_tiny").iterdir()) == runs_before
    for folder in ("gpu_runs", "cache_runs", "w_runs", "eval_out"):
        assert not (world["root"] / folder).exists()
    assert list(tmp_path.iterdir()) == []


def _windows(text: str) -> bytes:
    """``text`` as a Windows editor saves it: a byte-order mark and CRLF line endings."""
    return b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode()


def _read_ave(root):
    from molt.tasks.ave.reader import AVEAnnotations

    annotations = AVEAnnotations.from_dir(root)
    return annotations.categories, annotations.records(), annotations.records("train")


def _read_avs(root):
    from molt.tasks.avs.reader import AVSBenchLayout

    return AVSBenchLayout.find(root, "s4").records


def _read_avqa(root):
    from molt.tasks.avqa.reader import MusicAVQA

    data = MusicAVQA.from_dir(root)
    return data.records(), data.answers


def _read_avvp(root):
    from molt.tasks.avvp.reader import LLPAnnotations

    annotations = LLPAnnotations.from_dir(root)
    record = annotations.records("val")[0]
    return annotations.categories, annotations.records("train"), [m.tolist() for m in
                                                                   annotations.segment_labels(record)]


_WINDOWS_FILES = [
    ("ave", _read_ave, {"Annotations.txt": _AVE_HEADER + "Dog&abc&good&0&5\nCat&abd&good&2&10\n",
                        "trainSet.txt": "Dog&abc&good&0&5\n", "categories.txt": "Dog\nCat\n"}),
    ("avs", _read_avs, {"s4_meta_data.csv": "name,start,category,split\nabc,0,dog,train\nabd,1,cat,test\n"}),
    ("avqa", _read_avqa, {"avqa-train.json": json.dumps([_QUESTION], indent=1), "ans_vocab.txt": "two\nthree\n"}),
    ("avvp", _read_avvp, {"AVVP_train.csv": _LLP_WEAK + "abcdefghijk_0_10\tDog,Cat\n",
                          "AVVP_val_pd.csv": _LLP_WEAK + "bbcdefghijk_0_10\tDog\n",
                          "AVVP_eval_audio.csv": _LLP_EVENTS + "bbcdefghijk_0_10\t1\t3\tDog\n",
                          "AVVP_eval_visual.csv": _LLP_EVENTS + "bbcdefghijk_0_10\t2\t4\tDog\n",
                          "categories.txt": "Dog\nCat\n"}),
]


@pytest.mark.parametrize("task, read, files", _WINDOWS_FILES, ids=[row[0] for row in _WINDOWS_FILES])
def test_files_saved_on_windows_read_as_the_same_records(tmp_path, task, read, files):
    """A byte-order mark and CRLF line endings (what Windows editors write) change nothing, in every file of every
    task's reader."""
    for flavour, encode in (("unix", str.encode), ("windows", _windows)):
        for name, text in files.items():
            (tmp_path / flavour / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / flavour / name).write_bytes(encode(text))
    unix, windows = read(tmp_path / "unix"), read(tmp_path / "windows")
    assert unix == windows
    assert "\ufeff" not in repr(windows) and "\\r" not in repr(windows)


def test_debug_shows_the_traceback(world, capfd):
    with pytest.raises(FileNotFoundError):
        main(["--debug", "train", "ave", "--data", str(world["root"] / "nowhere")])
    assert json.dumps(str(world["root"]))  # the world fixture is still usable
