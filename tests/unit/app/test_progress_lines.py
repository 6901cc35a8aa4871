"""Off a terminal, training logs one progress line per epoch (and every N steps when asked), without Lightning's
chatter."""
import logging
import re

from molt.app.train import ProgressLines, _duration, train
from molt.config import load_config


def test_epoch_and_step_lines_with_loss_score_and_eta(ave_data, tmp_path, caplog):
    config = load_config("ave_molt_tiny", {"trainer": {"max_epochs": 2, "progress_every_n_steps": 1}})
    with caplog.at_level(logging.INFO):
        result = train(config, data=ave_data, out_dir=tmp_path, enable_progress_bar=False)
    lines = [r.getMessage() for r in caplog.records if r.name == "molt.app.train"]
    epochs = [line for line in lines if re.match(r"epoch \d/2: ", line)]
    assert [line.split(":")[0] for line in epochs] == ["epoch 1/2", "epoch 2/2"]
    pattern = r"epoch 2/2: train loss \d+\.\d{4}, val/accuracy (\d\.\d{4}) \(best (\d\.\d{4})\), .* elapsed, ETA 0 s"
    score, best = map(float, re.match(pattern, epochs[1]).groups())
    assert best == max(score, float(re.search(r"val/accuracy (\d\.\d{4})", epochs[0]).group(1)))
    assert round(result["best_val_accuracy"], 4) == best
    steps = [line for line in lines if re.match(r"epoch 1/2 step \d+/\d+: train loss \d+\.\d{4}, ", line)]
    done, total = map(int, re.match(r"epoch 1/2 step (\d+)/(\d+)", steps[-1]).groups())
    assert done == total == len(steps)                       # one line per step, the last at the epoch's end
    chatter = [r.getMessage() for r in caplog.records if "GPU available" in r.getMessage()
               or "Seed set to" in r.getMessage() or "`Trainer.fit` stopped" in r.getMessage()]
    assert chatter == []


def test_durations_read_like_a_clock():
    assert [_duration(s) for s in (0.4, 42, 190, 3720)] == ["0 s", "42 s", "3 min 10 s", "1 h 02 min"]
    assert ProgressLines("val/accuracy", "max").best is None
