"""PyAV decoding and encoding of clips: round trip, segment alignment, and every failure reason."""
from fractions import Fraction

import av
import numpy as np
import pytest

from molt.data.media import MediaError, is_silent, media_seconds, on_video_timeline, read_clip, rms_dbfs, write_clip

RATE = 16000


def _clip(seconds: float, fps: int = 4, size: int = 32):
    """Red frames and a 440 Hz tone for the first half, blue frames and 1000 Hz for the second half."""
    frames = np.zeros((int(seconds * fps), size, size, 3), dtype=np.uint8)
    half = len(frames) // 2
    frames[:half, ..., 0] = 220
    frames[half:, ..., 2] = 220
    t = np.arange(int(seconds * RATE)) / RATE
    audio = np.where(t < seconds / 2, 0.5 * np.sin(2 * np.pi * 440 * t), 0.5 * np.sin(2 * np.pi * 1000 * t))
    return frames, audio.astype(np.float32)


def _dominant_hz(window: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(window * np.hanning(len(window))))
    return float(np.argmax(spectrum) * rate / len(window))


@pytest.fixture(scope="module")
def clip_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("media") / "clip.mp4"
    write_clip(path, *_clip(10.0), fps=4, sample_rate=RATE)
    return path


def test_round_trip_shapes_colours_and_pitch(clip_path):
    clip = read_clip(clip_path, image_size=16)
    assert clip.frames.shape == (10, 16, 16, 3) and clip.frames.dtype == np.uint8
    assert clip.audio.shape == (10, 32000) and clip.audio.dtype == np.float32
    assert clip.sample_rate == 32000 and clip.num_segments == 10
    assert clip.video_seconds == pytest.approx(10.0, abs=0.01)
    mean_rgb = clip.frames.reshape(10, -1, 3).mean(axis=1)
    assert (mean_rgb[:5, 0] > 180).all() and (mean_rgb[:5, 2] < 40).all()   # red first half
    assert (mean_rgb[5:, 2] > 180).all() and (mean_rgb[5:, 0] < 40).all()   # blue second half
    pitches = [_dominant_hz(segment, 32000) for segment in clip.audio]
    assert pitches[:5] == pytest.approx([440] * 5, abs=5)
    assert pitches[5:] == pytest.approx([1000] * 5, abs=5)
    # the switch lands on the 5-s boundary: the windows just before and after it have the expected pitches
    flat = clip.audio.reshape(-1)
    assert _dominant_hz(flat[160000 - 1600:160000 - 200], 32000) == pytest.approx(440, abs=25)
    assert _dominant_hz(flat[160000 + 200:160000 + 1600], 32000) == pytest.approx(1000, abs=25)


def test_frame_nearest_segment_centre(tmp_path):
    frames = np.zeros((40, 16, 16, 3), dtype=np.uint8)
    frames[:, ..., 1] = np.arange(40, dtype=np.uint8)[:, None, None] * 6   # brightness encodes the frame index
    path = tmp_path / "ramp.mp4"
    write_clip(path, frames, np.zeros(10 * RATE, np.float32), fps=4, sample_rate=RATE)
    clip = read_clip(path, image_size=16)
    green = clip.frames[..., 1].reshape(10, -1).mean(axis=1)
    expected = (np.arange(10) * 4 + 2) * 6.0   # centre of segment i is at (i + 0.5) s = frame 4 i + 2
    assert np.abs(green - expected).max() < 6


def test_missing_empty_and_corrupt_files(tmp_path):
    with pytest.raises(MediaError) as error:
        read_clip(tmp_path / "nope.mp4")
    assert error.value.reason == "missing file" and error.value.path.endswith("nope.mp4")
    empty = tmp_path / "empty.mp4"
    empty.touch()
    with pytest.raises(MediaError, match="empty file"):
        read_clip(empty)
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(MediaError) as error:
        read_clip(corrupt)
    assert error.value.reason == "undecodable"
    assert isinstance(error.value, ValueError)


def test_missing_tracks(tmp_path):
    frames, audio = _clip(10.0)
    video_only = tmp_path / "video_only.mp4"
    with av.open(str(video_only), "w") as container:
        stream = container.add_stream("libx264", rate=4)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with pytest.raises(MediaError, match="no audio track"):
        read_clip(video_only)
    audio_only = tmp_path / "audio_only.m4a"
    with av.open(str(audio_only), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=RATE, layout="mono")
        frame = av.AudioFrame.from_ndarray(audio[None], format="flt", layout="mono")
        frame.sample_rate = RATE
        frame.pts = 0
        frame.time_base = Fraction(1, RATE)
        for packet in list(stream.encode(frame)) + list(stream.encode()):
            container.mux(packet)
    with pytest.raises(MediaError, match="no video track"):
        read_clip(audio_only)


def test_too_short_and_tolerance(tmp_path):
    short = tmp_path / "short.mp4"
    write_clip(short, *_clip(8.0), fps=4, sample_rate=RATE)
    with pytest.raises(MediaError) as error:
        read_clip(short)
    assert error.value.reason == "too short"
    assert "8.0" in error.value.detail and "10 s" in error.value.detail
    assert read_clip(short, num_segments=8, image_size=8).audio.shape == (8, 32000)
    nearly = tmp_path / "nearly.mp4"
    write_clip(nearly, *_clip(9.75), fps=4, sample_rate=RATE)
    clip = read_clip(nearly, image_size=8)   # within the 0.5-s tolerance: padded
    assert clip.frames.shape == (10, 8, 8, 3) and clip.audio.shape == (10, 32000)
    assert rms_dbfs(clip.audio[-1]) > -12   # padded by mirroring, not with zeros
    with pytest.raises(MediaError, match="too short"):
        read_clip(nearly, tolerance_seconds=0.1)


def test_silence_is_detectable_not_an_error(tmp_path):
    frames, _ = _clip(10.0)
    path = tmp_path / "silent.mp4"
    write_clip(path, frames, np.zeros(10 * RATE, np.float32), fps=4, sample_rate=RATE)
    clip = read_clip(path, image_size=8)
    assert is_silent(clip.audio)
    assert not is_silent(0.1 * np.sin(np.linspace(0, 100, 1000)))
    assert rms_dbfs(np.zeros(4)) == float("-inf")


def test_write_clip_rejects_bad_input(tmp_path):
    frames, audio = _clip(2.0)
    with pytest.raises(ValueError, match="even"):
        write_clip(tmp_path / "odd.mp4", frames[:, :31], audio, fps=4, sample_rate=RATE)
    with pytest.raises(ValueError, match="uint8"):
        write_clip(tmp_path / "float.mp4", frames.astype(np.float32), audio, fps=4, sample_rate=RATE)
    with pytest.raises(ValueError, match="mono"):
        write_clip(tmp_path / "stereo.mp4", frames, np.stack([audio, audio]), fps=4, sample_rate=RATE)
    assert not list(tmp_path.iterdir())   # nothing half-written


def _onset_seconds(audio: np.ndarray, rate: int) -> float:
    """Time of the first sample louder than a tenth of full scale."""
    return float(np.flatnonzero(np.abs(audio.reshape(-1)) > 0.1)[0] / rate)


@pytest.mark.parametrize("audio_start", [0.0, 2.0, 2.98])
def test_audio_is_placed_on_the_video_timeline(tmp_path, audio_start):
    """An audio stream that starts late (its container's start time) is heard late: a tone 1 s into the audio
    track lands at 1 s + the stream's start on the decoded timeline, within one AAC frame (1024 samples); an
    aligned clip is decoded as before (tone at 1 s), and so is what ``molt predict`` decodes (same reader)."""
    frames = np.zeros((10 * 4, 16, 16, 3), dtype=np.uint8)
    audio = np.zeros(10 * RATE, dtype=np.float32)
    audio[RATE:] = 0.5 * np.sin(2 * np.pi * 440 * np.arange(9 * RATE) / RATE)
    path = tmp_path / "late.mp4"
    write_clip(path, frames, audio, fps=4, sample_rate=RATE, audio_start=audio_start)
    clip = read_clip(path, image_size=16)
    assert _onset_seconds(clip.audio, clip.sample_rate) == pytest.approx(1.0 + audio_start, abs=1024 / RATE)
    assert clip.audio_seconds == pytest.approx(10.0 + audio_start, abs=0.1)
    assert media_seconds(path)[1] == pytest.approx(10.0 + audio_start, abs=0.1)


def test_audio_before_the_first_frame_is_dropped():
    waveform = np.arange(10, dtype=np.float32)
    assert on_video_timeline(waveform, -0.3, 10).tolist() == [3, 4, 5, 6, 7, 8, 9]
    assert on_video_timeline(waveform, 0.2, 10).tolist() == [0, 0] + list(range(10))
    assert on_video_timeline(waveform, 0.01, 10) is waveform  # within half a sample: unchanged
