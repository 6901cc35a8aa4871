"""A MUSIC-AVQA feature cache holds one entry per video, not per question: the backbones run once per video, and
training from it matches online training."""
import json

import pytest

from molt.app.cli import main
from molt.config import load_config
from molt.features import FeatureManifest, MediaView, media_rows
from molt.tasks.ave.prepared import PreparedAVE
from molt.tasks.avqa.prepared import PreparedAVQA
from molt.tasks.avqa.synthetic import generate_avqa
from molt.app.train import train


@pytest.fixture(scope="module")
def avqa(tmp_path_factory):
    root = tmp_path_factory.mktemp("avqa_cache")
    generate_avqa(root / "data", num_videos=10, seed=7, image_size=64, fps=2, workers=1, show_progress=False)
    assert main(["--quiet", "prepare", "avqa", "--data", str(root / "data"), "--workers", "1"]) == 0
    return root, root / "data" / "prepared"


def test_one_entry_per_video(avqa):
    root, prepared = avqa
    cache = root / "cache"
    assert main(["--quiet", "extract", "avqa", "--data", str(prepared), "--out", str(cache), "--dtype", "float32"]) == 0
    assert FeatureManifest.load(cache).keyed_by == "media"
    for split in ("train", "val", "test"):
        dataset = PreparedAVQA(prepared, split)
        videos = {row["video_id"] for row in dataset.rows}
        assert len(videos) < len(dataset)                    # several questions per video
        done = json.loads((cache / split / "split.json").read_text())
        assert done["num_items"] == len(videos) == len(MediaView(dataset))
        positions = MediaView(dataset).positions()
        assert [MediaView(dataset).media[p] for p in positions] == [row["media_index"] for row in dataset.rows]


def test_training_from_the_video_keyed_cache_matches_online(avqa, tmp_path):
    root, prepared = avqa
    cache = root / "cache"
    if not (cache / "manifest.json").is_file():
        assert main(["--quiet", "extract", "avqa", "--data", str(prepared), "--out", str(cache), "--dtype",
                     "float32"]) == 0
    config = load_config("avqa_molt_tiny", {"trainer": {"max_epochs": 1, "batch_size": 8, "seed": 3}})
    online = train(config, data=prepared, out_dir=tmp_path / "online", enable_progress_bar=False)
    cached = train(config, data=prepared, out_dir=tmp_path / "cached", enable_progress_bar=False, features=cache)
    assert cached["global_step"] == online["global_step"] > 0
    assert cached["test"]["loss"] == pytest.approx(online["test"]["loss"], rel=1e-4)
    assert cached["test"]["accuracy"] == pytest.approx(online["test"]["accuracy"], abs=1e-6)


def test_one_item_per_clip_stays_keyed_by_item(ave_data):
    assert media_rows(PreparedAVE(ave_data / "prepared", "train")) is None
