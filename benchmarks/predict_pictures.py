"""The pictures of the task pages (docs/tasks/*.md): `molt predict` for every task, on synthetic clips.

    python benchmarks/predict_pictures.py [--workdir /tmp/molt-predict] [--demo-workdir DIR] [--out docs]

AVE uses the model of ``molt demo`` (run first into ``--demo-workdir`` when it has no ``demo.json``) on two of its
test clips joined into one 20-s video, to show the stitched 10-s windows. For the other tasks: generate a small
synthetic set in the task's real layout, train the tiny preset with `molt train`, and run `molt predict` on a test
clip (AVS: its frame folder and WAV; AVQA: a test question). Copies each picture to ``--out`` as
``predict_<task>.png`` and prints the commands it ran.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import av
import numpy as np

from molt.app.cli import main as molt
from molt.data.media import write_clip

# task -> (clips, epochs)
BUDGET = {"avs": (80, 8), "avqa": (60, 8), "avvp": (80, 8)}


def _run(*argv: str) -> None:
    print("molt " + " ".join(argv), flush=True)
    if molt(["--quiet", *argv]) != 0:
        raise SystemExit(f"molt {' '.join(argv)} failed")


def _frames_and_audio(path: Path) -> tuple[np.ndarray, np.ndarray, float, int]:
    with av.open(str(path)) as container:
        video, sound = container.streams.video[0], container.streams.audio[0]
        rate, sample_rate = float(video.average_rate), sound.rate
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    with av.open(str(path)) as container:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        audio = [r.to_ndarray().reshape(-1) for f in container.decode(audio=0) for r in resampler.resample(f)]
    return np.stack(frames), np.concatenate(audio), rate, sample_rate


def _joined(first: Path, second: Path, out: Path) -> Path:
    """Two clips one after the other, 10 s each."""
    parts = [_frames_and_audio(path) for path in (first, second)]
    rate, sample_rate = parts[0][2], parts[0][3]
    frames = np.concatenate([p[0][:int(10 * rate)] for p in parts])
    audio = np.concatenate([p[1][:10 * sample_rate] for p in parts])
    write_clip(out, frames, audio, fps=rate, sample_rate=sample_rate)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/molt-predict"))
    parser.add_argument("--demo-workdir", type=Path, default=None, help="molt demo's workdir (default: its own)")
    parser.add_argument("--out", type=Path, default=Path("docs"))
    args = parser.parse_args()
    work, out = args.workdir, args.out
    out.mkdir(parents=True, exist_ok=True)
    from molt.app.demo import default_workdir

    demo = args.demo_workdir or default_workdir()
    if not (demo / "demo.json").is_file():
        _run("demo", "--workdir", str(demo))
    summary = json.loads((demo / "demo.json").read_text())
    data = Path(summary["data"])
    ids = [line.split("&")[1] for line in (data / "testSet.txt").read_text().splitlines()[:2]]
    video = _joined(*(data / "AVE" / f"{i}.mp4" for i in ids), work / "ave_two_clips.mp4")
    _run("predict", "ave", "--checkpoint", summary["adapters"], "--video", str(video), "--out",
         str(work / "ave_prediction"))
    print("true events: " + "; ".join(line for line in (data / "testSet.txt").read_text().splitlines()[:2]))
    shutil.copy(work / "ave_prediction" / "timeline.png", out / "predict_ave.png")
    for task, (clips, epochs) in BUDGET.items():
        data, runs = work / task, work / f"{task}_runs"
        if not data.exists():
            _run("synth", task, "--out", str(data), "--videos", str(clips), "--image-size", "64")
        _run("train", task, "--data", str(data), "--epochs", str(epochs), "--out", str(runs))
        adapters = str(sorted(runs.glob("*/version_*/adapters/best"))[-1])
        prediction = work / f"{task}_prediction"
        if task == "avs":
            prepared = next(data.glob("prepared_*"))
            name = next(r["video_id"] for r in json.loads((prepared / "index.json").read_text())["rows"]
                        if r["split"] == "test")
            frames = next(data.rglob(f"visual_frames/*/*/{name}"))
            _run("predict", "avs", "--checkpoint", adapters, "--frames", str(frames), "--audio",
                 str(next(data.rglob(f"{name}.wav"))), "--out", str(prediction))
            picture = prediction / "overlay.png"
        elif task == "avqa":
            row = next(r for r in json.loads((data / "prepared" / "index.json").read_text())["rows"]
                       if r["split"] == "test")
            video = next(data.rglob(f"{row['video_id']}.mp4"))
            _run("predict", "avqa", "--checkpoint", adapters, "--video", str(video), "--question", row["question"],
                 "--out", str(prediction))
            picture = prediction / "attention.png"
        else:
            video = sorted((data / "LLP_dataset" / "video").glob("*.mp4"))[-1]
            _run("predict", "avvp", "--checkpoint", adapters, "--video", str(video), "--out", str(prediction))
            picture = prediction / "events.png"
        shutil.copy(picture, out / f"predict_{task}.png")
        print(f"-> {out / f'predict_{task}.png'}", flush=True)


if __name__ == "__main__":
    main()
