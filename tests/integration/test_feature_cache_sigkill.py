"""A feature extraction killed by SIGKILL part-way resumes: finished chunks are kept, the killed one is redone."""
import runpy
import signal
import subprocess
import sys

import torch

from molt.features import DONE_FILE, FeatureCache, extract_features

KILL_SCRIPT = '''
import os, signal, sys, time
import torch
from molt.features import FeatureManifest, TapGroupSpec, extract_features

SHAPES = [(3, 4), (5, 2)]
MANIFEST = FeatureManifest(task="ave", num_segments=2, chunk_size=2, groups={"visual_taps": TapGroupSpec(
    backbone="synthetic", blocks=[0, 1], token_shapes=SHAPES)})


class Clips(torch.utils.data.Dataset):
    def __len__(self):
        return 7

    def __getitem__(self, index):
        return {"frames": torch.arange(2 * 3, dtype=torch.float32).view(2, 3) + 10 * index}


class Compute:
    def __init__(self, kill_at=None):
        self.kill_at, self.calls = kill_at, 0

    def __call__(self, batch):
        self.calls += 1
        if self.calls == self.kill_at:
            time.sleep(0.5)  # let the writer finish the chunks already handed to it
            os.kill(os.getpid(), signal.SIGKILL)
        rows = batch["frames"].flatten(0, 1)  # (B*T, 3)
        return {"visual_taps": [rows.sum(1)[:, None, None] + torch.arange(n * d).view(1, n, d).float()
                                for n, d in SHAPES]}


if __name__ == "__main__":
    extract_features(Clips(), Compute(kill_at=int(sys.argv[2])), sys.argv[1], MANIFEST, split="train",
                     batch_size=1, show_progress=False)
'''


def test_resume_after_a_real_sigkill(tmp_path, one_thread):
    script = tmp_path / "extract_and_die.py"
    script.write_text(KILL_SCRIPT)
    out = tmp_path / "cache"
    # batch_size=1, chunks of 2 clips: call 6 is the second clip of the third chunk
    result = subprocess.run([sys.executable, str(script), str(out), "6"], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == -signal.SIGKILL, result.stderr
    done = sorted(path.parent.name for path in (out / "train").glob(f"chunk_*/{DONE_FILE}"))
    assert done == ["chunk_00000", "chunk_00001"]
    assert list((out / "train" / "chunk_00002").glob("*.partial"))  # the killed chunk, never read
    namespace = runpy.run_path(str(script))
    compute = namespace["Compute"]()
    report = extract_features(namespace["Clips"](), compute, out, namespace["MANIFEST"], split="train",
                              batch_size=1, show_progress=False)
    assert compute.calls == 3 and (report.chunks_skipped, report.chunks_written) == (2, 2)
    assert not list(out.rglob("*.partial"))  # the killed chunk's files are gone once it is redone
    cache = FeatureCache(out, "train")
    assert cache.verify() == []
    reference = namespace["Compute"]()
    for index in range(7):
        expected = reference({"frames": namespace["Clips"]()[index]["frames"][None]})["visual_taps"]
        assert all(torch.equal(a, b) for a, b in zip(cache[index]["visual_taps"], expected))
