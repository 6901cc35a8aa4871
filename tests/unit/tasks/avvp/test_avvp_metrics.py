"""AVVP metrics on hand-made rasters with known F1: segment and event level, Type@AV, Event@AV, edge cases."""
import pytest
import torch

from molt.tasks.avvp import avvp_scores, event_level_f1, segment_level_f1

T, C = 10, 3


def raster(*events: tuple[int, int, int]) -> torch.Tensor:
    """One clip's raster (1, T, C) with the events (class, onset, offset) set."""
    result = torch.zeros(1, T, C, dtype=torch.bool)
    for cls, onset, offset in events:
        result[0, onset:offset, cls] = True
    return result


def scores(function, pa, pv, ta, tv) -> dict[str, float]:
    return {kind: float(value.item()) for kind, value in function(pa, pv, ta, tv).items()}


def test_perfect_prediction_scores_one_everywhere():
    audio, visual = raster((0, 0, 4), (2, 6, 10)), raster((0, 2, 8), (1, 0, 10))
    result = avvp_scores(audio, visual, audio, visual)
    assert set(result) == {f"{level}_{kind}_f1" for level in ("segment", "event")
                           for kind in ("audio", "visual", "av", "type_av", "event_av")}
    assert all(value == pytest.approx(1.0) for value in result.values())


def test_nothing_predicted_and_nothing_true_counts_as_one():
    empty = raster()
    assert all(value == 1.0 for value in avvp_scores(empty, empty, empty, empty).values())
    # audio empty on both sides but visual wrong: audio stays 1.0 (all true negatives), visual is 0
    result = scores(segment_level_f1, empty, raster((1, 0, 3)), empty, raster((2, 0, 3)))
    assert result == {"audio": 1.0, "visual": 0.0, "av": 1.0, "event_av": 0.0}


def test_missing_or_spurious_predictions_score_zero():
    truth = raster((0, 2, 5))
    empty = raster()
    for level in (segment_level_f1, event_level_f1):
        missed = scores(level, empty, empty, truth, truth)            # nothing predicted, events exist
        assert missed == {"audio": 0.0, "visual": 0.0, "av": 0.0, "event_av": 0.0}
        spurious = scores(level, truth, truth, empty, empty)          # events predicted, none exist
        assert spurious == {"audio": 0.0, "visual": 0.0, "av": 0.0, "event_av": 0.0}


def test_segment_level_hand_case():
    # audio: class 0 true on 0-4, predicted on 2-6 (TP 2, FP 2, FN 2 -> 0.5); class 1 predicted on 8-10, never
    # true (F1 0). The clip's audio F1 is the mean over the two active classes: 0.25.
    pred_audio, true_audio = raster((0, 2, 6), (1, 8, 10)), raster((0, 0, 4))
    # visual: class 1 seen all along, predicted all along -> 1.0
    pred_visual = true_visual = raster((1, 0, 10))
    result = scores(segment_level_f1, pred_audio, pred_visual, true_audio, true_visual)
    assert result["audio"] == pytest.approx(0.25)
    assert result["visual"] == pytest.approx(1.0)
    # audio-visual: nothing is both heard and seen in the truth; the prediction says class 1 on 8-10 -> 0
    assert result["av"] == pytest.approx(0.0)
    # Event@AV pools the counts per class: class 0 (TP 2, FP 2, FN 2) -> 0.5; class 1 (TP 0 + 10, FP 2 + 0,
    # FN 0) -> 20 / 22; mean 0.7045...
    assert result["event_av"] == pytest.approx((0.5 + 20 / 22) / 2)
    dataset = avvp_scores(pred_audio, pred_visual, true_audio, true_visual)
    assert dataset["segment_type_av_f1"] == pytest.approx((0.25 + 1.0 + 0.0) / 3)
    assert dataset["segment_event_av_f1"] == pytest.approx((0.5 + 20 / 22) / 2)


def test_audio_visual_rasters_are_products():
    # heard on 0-6 and seen on 3-10 -> audio-visual 3-6; predicted heard 0-10 and seen 4-10 -> audio-visual 4-10
    result = scores(segment_level_f1, raster((0, 0, 10)), raster((0, 4, 10)), raster((0, 0, 6)), raster((0, 3, 10)))
    assert result["av"] == pytest.approx(2 * 2 / (2 * 2 + 4 + 1))  # TP 4-6, FP 6-10, FN 3-4


def test_event_level_iou_threshold_and_runs():
    truth = raster((0, 0, 4))
    # [0,3) overlaps [0,4) with IoU 3/4 -> TP; [5,6) matches nothing -> FP; the true event is found -> F1 2/3
    assert scores(event_level_f1, raster((0, 0, 3), (0, 5, 6)), raster(), truth, raster())["audio"] == \
        pytest.approx(2 / 3)
    # IoU exactly 0.5 counts as a match; just below does not
    assert scores(event_level_f1, raster((0, 0, 2)), raster(), truth, raster())["audio"] == 1.0
    assert scores(event_level_f1, raster((0, 0, 1)), raster(), truth, raster())["audio"] == 0.0
    # one long prediction over two true events (IoU 2/5 each) finds neither: FP 1, FN 2 -> 0, while the
    # segment level gives 2 * 4 / (2 * 4 + 1 + 0) = 8/9
    two, long = raster((1, 0, 2), (1, 3, 5)), raster((1, 0, 5))
    assert scores(event_level_f1, raster(), long, raster(), two)["visual"] == 0.0
    assert scores(segment_level_f1, raster(), long, raster(), two)["visual"] == pytest.approx(8 / 9)
    # events at the clip's edges (segment 0 and segment 9) are runs too
    edges = raster((2, 0, 1), (2, 9, 10))
    assert scores(event_level_f1, edges, raster(), edges, raster())["audio"] == 1.0
    assert scores(event_level_f1, raster((2, 9, 10)), raster(), edges, raster())["audio"] == pytest.approx(2 / 3)


def test_event_level_event_av_pools_audio_and_visual_counts():
    # class 0: audio TP 1 (one event found), visual FN 1 -> pooled TP 1, FN 1 -> 2/3
    result = scores(event_level_f1, raster((0, 0, 4)), raster(), raster((0, 0, 4)), raster((0, 6, 9)))
    assert result["audio"] == 1.0 and result["visual"] == 0.0
    assert result["event_av"] == pytest.approx(2 / 3)


def test_classes_are_averaged_within_a_clip_and_clips_averaged_over_the_set():
    # macro over classes: class 0 perfect over 10 segments, class 1 one false alarm -> (1 + 0) / 2, not 20 / 21
    clip = scores(segment_level_f1, raster((0, 0, 10), (1, 0, 1)), raster(), raster((0, 0, 10)), raster())
    assert clip["audio"] == pytest.approx(0.5)
    # mean over clips: a perfect clip with 10 true segments and a clip with one false alarm -> 0.5, not 20 / 21
    pred = torch.cat([raster((0, 0, 10)), raster((1, 3, 4))])
    true = torch.cat([raster((0, 0, 10)), raster()])
    empty = torch.zeros_like(pred)
    assert segment_level_f1(pred, empty, true, empty)["audio"].tolist() == [1.0, 0.0]
    assert avvp_scores(pred, empty, true, empty)["segment_audio_f1"] == pytest.approx(0.5)


def test_inputs_float_thresholded_and_checked():
    truth = raster((0, 2, 5))
    probabilities = truth.float() * 0.9 + 0.05                            # 0.95 on events, 0.05 elsewhere
    assert scores(segment_level_f1, probabilities, probabilities, truth, truth)["audio"] == 1.0
    assert scores(segment_level_f1, truth.long(), truth.long(), truth.float(), truth.float())["av"] == 1.0
    with pytest.raises(ValueError, match="one shape"):
        segment_level_f1(truth, truth, truth, torch.zeros(1, T, C + 1))
    with pytest.raises(ValueError, match="one shape"):
        event_level_f1(truth[0], truth[0], truth[0], truth[0])
