"""Decode and encode audio-visual clips with PyAV (FFmpeg), one frame and one audio window per 1-s segment.

Part of molt-av (Apache-2.0), an implementation of "Mixture of Layer-Wise Tokens for Efficient Audio-Visual
Learning" (MoLT). AVE clips are cut into ``T = 10`` one-second segments; every segment gives one RGB frame and
one window of ``sample_rate * segment_seconds`` audio samples (32,000 at 32 kHz), as the peer implementations
feed them to Swin-V2 and HTS-AT.

Choices (documented because they differ in detail from the peers, who pre-extract JPEG frames and WAV files
with ffmpeg and then pick ``np.linspace(1, num_frames, 10)`` frame indices, i.e. evenly spaced from the first to
the last extracted frame):

* **frame per segment**: the decoded frame whose presentation time is nearest the segment's centre
  (``(i + 0.5) * segment_seconds``), measured from the first video frame. For a 10-s clip this differs from the
  peers' pick by less than half a second and never depends on the frame rate the frames were extracted at.
* **resize**: FFmpeg's bicubic scaler straight to ``image_size x image_size`` (aspect ratio not kept), like the
  peers' ``Resize([192, 192], bicubic)``.
* **audio**: the first audio track is decoded, down-mixed to mono and resampled to ``sample_rate`` with
  :class:`av.AudioResampler`, then placed on the video's timeline: a container records when each stream starts
  (the frames' presentation times), and an audio track that starts after the first video frame is preceded by
  silence for that long, one that starts before it loses the samples before it (so a sound heard at second 3 of
  the video is at second 3 of the decoded audio, whatever the streams' start times). The first
  ``num_segments * segment_seconds`` seconds of that timeline are cut into ``num_segments`` windows.
* **short clips**: a clip up to ``tolerance_seconds`` (default 0.5 s) shorter than needed is padded: audio by
  mirroring its last samples, frames by reusing the last frame. Anything shorter is a :class:`MediaError`.
* **silence** is not an error: a muted clip is still a valid (if uninformative) training example. Use
  :func:`is_silent` to find such clips; :class:`molt.data.prepared.PrepareRun` counts and logs them.

Every failure to read a file raises :class:`MediaError` (a :class:`ValueError`) carrying ``path`` and a short
``reason`` (``"missing file"``, ``"empty file"``, ``"undecodable"``, ``"no audio track"``, ``"no video track"``,
``"too short"``).
"""
from __future__ import annotations

import ctypes
import functools
import multiprocessing
import os
import signal
import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable, Iterator, Sequence

import av
import numpy as np

__all__ = ["Clip", "MediaError", "read_clip", "write_clip", "is_silent", "rms_dbfs", "decode_pcm16",
           "worker_context", "parallel_map", "media_seconds", "whole_segments", "on_video_timeline",
           "die_with_parent"]

PathLike = str | os.PathLike


class MediaError(ValueError):
    """A media file cannot be used.

    Attributes:
        path: the file.
        reason: a short machine-friendly reason (``"missing file"``, ``"empty file"``, ``"undecodable"``,
            ``"no audio track"``, ``"no video track"``, ``"too short"``).
        detail: a human-readable explanation (durations, decoder message).
    """

    def __init__(self, path: PathLike, reason: str, detail: str = "") -> None:
        self.path = str(path)
        self.reason = reason
        self.detail = detail
        message = f"{self.path}: {reason}" + (f" ({detail})" if detail else "")
        super().__init__(message)

    def __reduce__(self):  # keep the attributes when the error crosses a process boundary
        return type(self), (self.path, self.reason, self.detail)


@dataclass
class Clip:
    """A decoded clip cut into segments.

    Attributes:
        frames: ``uint8`` array ``(T, H, W, 3)``, RGB, one frame per segment.
        audio: ``float32`` array ``(T, S)`` in ``[-1, 1]``, mono, ``S = sample_rate * segment_seconds``.
        sample_rate: audio sample rate of :attr:`audio`.
        video_seconds: duration covered by the decoded video frames.
        audio_seconds: end of the decoded audio on the video's timeline (from the first video frame; a late
            start counts as silence, see the module docstring).
    """

    frames: np.ndarray
    audio: np.ndarray
    sample_rate: int
    video_seconds: float
    audio_seconds: float

    @property
    def num_segments(self) -> int:
        return int(self.frames.shape[0])


def rms_dbfs(audio: np.ndarray) -> float:
    """Root-mean-square level of ``audio`` (any shape, float in ``[-1, 1]``) in dB relative to full scale."""
    audio = np.asarray(audio, dtype=np.float64)
    if audio.size == 0:
        return float("-inf")
    rms = float(np.sqrt(np.mean(np.square(audio))))
    return 20.0 * np.log10(rms) if rms > 0 else float("-inf")


def is_silent(audio: np.ndarray, threshold_db: float = -60.0) -> bool:
    """True when the RMS level of ``audio`` is below ``threshold_db`` dBFS (default -60 dBFS)."""
    return rms_dbfs(audio) < threshold_db


def _check_file(path: Path) -> None:
    if not path.exists():
        raise MediaError(path, "missing file")
    if not path.is_file():
        raise MediaError(path, "missing file", "not a regular file")
    if path.stat().st_size == 0:
        raise MediaError(path, "empty file", "0 bytes")


def _open_with_tracks(path: Path) -> "av.container.InputContainer":
    """``path`` opened with PyAV, or a :class:`MediaError` when it is missing, empty, undecodable or lacks a video or
    an audio track (the caller closes the container)."""
    _check_file(path)
    try:
        container = av.open(str(path), mode="r")
    except (av.FFmpegError, UnicodeDecodeError) as error:
        raise MediaError(path, "undecodable", str(error)) from None
    missing = "no video track" if not container.streams.video else "no audio track" if not container.streams.audio \
        else None
    if missing:
        container.close()
        raise MediaError(path, missing)
    return container


def read_clip(path: PathLike, *, num_segments: int = 10, segment_seconds: float = 1.0, image_size: int = 192,
              sample_rate: int = 32000, tolerance_seconds: float = 0.5) -> Clip:
    """Decode ``path`` into ``num_segments`` frames and audio windows.

    Args:
        path: a media file FFmpeg can read (mp4, mkv, webm, ...) with a video and an audio track.
        num_segments: number of segments ``T`` taken from the start of the clip.
        segment_seconds: length of a segment in seconds.
        image_size: frames are resized (bicubic) to ``image_size x image_size``.
        sample_rate: audio is resampled to this rate (mono).
        tolerance_seconds: how much shorter than ``num_segments * segment_seconds`` a clip may be; the missing
            end is padded (see the module docstring).

    Returns:
        a :class:`Clip` with frames ``(T, image_size, image_size, 3)`` uint8 and audio ``(T, S)`` float32.

    Raises:
        MediaError: missing, empty, undecodable file, missing track or too short a clip.
    """
    if num_segments < 1 or segment_seconds <= 0 or image_size < 1 or sample_rate < 1:
        raise ValueError(f"expected num_segments >= 1, segment_seconds > 0, image_size >= 1, sample_rate >= 1; got "
                         f"{num_segments}, {segment_seconds}, {image_size}, {sample_rate}")
    path = Path(path)
    needed = num_segments * segment_seconds
    centres = (np.arange(num_segments) + 0.5) * segment_seconds
    container = _open_with_tracks(path)
    try:
        video = container.streams.video[0]
        audio = container.streams.audio[0]
        video.thread_type = "AUTO"
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        best_frames: list = [None] * num_segments
        best_distance = np.full(num_segments, np.inf)
        first_time = None
        last_time = None
        frame_step = 0.0
        chunks: list[np.ndarray] = []
        audio_start = None
        frame_count = 0
        rate = float(video.average_rate) if video.average_rate else 0.0
        try:
            for packet in container.demux(video, audio):
                for frame in packet.decode():
                    if isinstance(frame, av.VideoFrame):
                        time = frame.time if frame.time is not None else (frame_count / rate if rate else None)
                        frame_count += 1
                        if time is None:
                            raise MediaError(path, "undecodable", "video frames carry no timestamps")
                        if first_time is None:
                            first_time = time
                        time -= first_time
                        if last_time is not None and time > last_time:
                            frame_step = time - last_time
                        last_time = time if last_time is None else max(last_time, time)
                        distance = np.abs(centres - time)
                        closer = distance < best_distance
                        if closer.any():
                            best_distance[closer] = distance[closer]
                            for index in np.flatnonzero(closer):
                                best_frames[index] = frame
                    else:
                        if audio_start is None:
                            audio_start = _frame_seconds(frame, audio)
                        for resampled in resampler.resample(frame):
                            chunks.append(resampled.to_ndarray().reshape(-1))
            for resampled in resampler.resample(None):
                chunks.append(resampled.to_ndarray().reshape(-1))
        except av.FFmpegError as error:
            raise MediaError(path, "undecodable", str(error)) from None
        if frame_count == 0:
            raise MediaError(path, "no video track", "the video track holds no decodable frame")
        if frame_step == 0.0 and rate:
            frame_step = 1.0 / rate
        video_seconds = float(last_time + frame_step)
        waveform = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
        if audio_start is not None and first_time is not None:
            waveform = on_video_timeline(waveform, audio_start - first_time, sample_rate)
        audio_seconds = waveform.size / sample_rate
        shortest = min(video_seconds, audio_seconds)
        if shortest < needed - tolerance_seconds:
            which = "video" if video_seconds <= audio_seconds else "audio"
            raise MediaError(path, "too short",
                             f"{which} lasts {shortest:.2f} s (video {video_seconds:.2f} s, audio "
                             f"{audio_seconds:.2f} s); {num_segments} segments of {segment_seconds:g} s need "
                             f"{needed:g} s, at most {tolerance_seconds:g} s less")
        frames = np.stack([
            frame.reformat(width=image_size, height=image_size, format="rgb24",
                           interpolation="BICUBIC").to_ndarray()
            for frame in best_frames
        ])
    finally:
        container.close()
    segment_samples = int(round(sample_rate * segment_seconds))
    total = segment_samples * num_segments
    if waveform.size < total:
        missing = total - waveform.size
        waveform = np.concatenate([waveform, waveform[::-1][:missing]])
        if waveform.size < total:  # a tolerance larger than the clip itself
            waveform = np.resize(waveform, total)
    audio_segments = np.clip(waveform[:total], -1.0, 1.0).astype(np.float32).reshape(num_segments, segment_samples)
    return Clip(frames=frames, audio=audio_segments, sample_rate=sample_rate, video_seconds=video_seconds,
                audio_seconds=audio_seconds)


def _frame_seconds(frame: "av.AudioFrame", stream: "av.audio.stream.AudioStream") -> float | None:
    """Presentation time of a decoded audio frame in seconds: its own, else its stream's start time, else
    ``None`` (a container without timestamps: the audio is then taken to start with the video)."""
    if frame.time is not None:
        return float(frame.time)
    if stream.start_time is not None and stream.time_base:
        return float(stream.start_time * stream.time_base)
    return None


def on_video_timeline(waveform: np.ndarray, offset_seconds: float, sample_rate: int) -> np.ndarray:
    """``waveform`` (1-D, starting ``offset_seconds`` after the first video frame; negative: before it) placed on
    the video's timeline: preceded by that much silence for a late start, its first samples dropped for an early
    one. A start within half a sample of the video's leaves it unchanged."""
    shift = int(round(offset_seconds * sample_rate))
    if shift > 0:
        return np.concatenate([np.zeros(shift, dtype=waveform.dtype), waveform])
    return waveform[-shift:] if shift < 0 else waveform


def media_seconds(path: PathLike) -> tuple[float, float]:
    """``(video seconds, audio seconds)`` of a file, from its streams' durations, else the container's, else the
    last packet's end (read without decoding); the audio's is where it ends on the video's timeline (its stream's
    start time counted, as :func:`read_clip` places it).

    Raises:
        MediaError: missing, empty or undecodable file, or a missing track.
    """
    path = Path(path)
    container = _open_with_tracks(path)
    try:
        streams = (container.streams.video[0], container.streams.audio[0])
        seconds = [float(stream.duration * stream.time_base) if stream.duration and stream.time_base else None
                   for stream in streams]
        starts = [float(stream.start_time * stream.time_base) if stream.start_time is not None and stream.time_base
                  else None for stream in streams]
        if seconds[1] is not None and None not in starts:  # the audio's end on the video's timeline
            seconds[1] = max(0.0, seconds[1] + starts[1] - starts[0])
        if None in seconds and container.duration:
            seconds = [value if value is not None else container.duration / av.time_base for value in seconds]
        if None in seconds:
            ends = [0.0, 0.0]
            try:
                for packet in container.demux(*streams):
                    if packet.pts is not None and packet.time_base:
                        end = float((packet.pts + (packet.duration or 0)) * packet.time_base)
                        position = 0 if packet.stream is streams[0] else 1
                        ends[position] = max(ends[position], end)
            except av.FFmpegError as error:
                raise MediaError(path, "undecodable", str(error)) from None
            seconds = [value if value is not None else ends[i] for i, value in enumerate(seconds)]
    finally:
        container.close()
    return seconds[0], seconds[1]


def whole_segments(path: PathLike, *, minimum_seconds: float = 1.0, segment_seconds: float = 1.0,
                   tolerance_seconds: float = 0.5) -> int:
    """How many ``segment_seconds`` segments a file holds (the last may be up to ``tolerance_seconds`` short, as
    :func:`read_clip` pads it); a :class:`MediaError` when its shorter track lasts less than ``minimum_seconds``."""
    video_seconds, audio_seconds = media_seconds(path)
    shortest = min(video_seconds, audio_seconds)
    if shortest < minimum_seconds:
        which = "video" if video_seconds <= audio_seconds else "audio"
        raise MediaError(path, "too short", f"{which} lasts {shortest:.2f} s (video {video_seconds:.2f} s, audio "
                                            f"{audio_seconds:.2f} s); at least {minimum_seconds:g} s are needed")
    return max(1, int((shortest + tolerance_seconds) // segment_seconds))


def worker_context() -> multiprocessing.context.BaseContext:
    """Start method of the decode / encode worker pools: ``fork`` where available (fast, and works from any
    ``__main__``, even ``python -``), else ``spawn``. Workers only run numpy and PyAV code."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(parent: int) -> None:
    """Make this (child) process die with ``parent``, its parent's pid; the initializer of every pool worker of
    :func:`parallel_map`. The process is killed when its parent dies, even by SIGKILL (Linux
    ``prctl(PR_SET_PDEATHSIG)``; elsewhere it notices at its next job, see :func:`_orphaned`), and leaves SIGINT
    (Ctrl-C reaches the whole process group) to the parent, which stops the pool itself."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # no prctl in this libc: the check in _orphaned still applies
            pass
    if os.getppid() != parent:  # the parent died before the request above was in place
        os._exit(1)


def _orphaned(function: Callable[[Any], Any], parent: int, job: Any) -> Any:
    """``function(job)`` in a pool worker, or the worker's exit when its parent has died meanwhile."""
    if os.getppid() != parent:
        os._exit(1)
    return function(job)


def parallel_map(function: Callable[[Any], Any], jobs: Sequence[Any], workers: int) -> Iterator[Any]:
    """``function(job)`` for every job, in job order: in this process when ``workers <= 1`` (or there is a single
    job), else in a pool of ``workers`` processes (:func:`worker_context`); ``function`` must be picklable. Every
    decoder and generator of the package runs its clips through it.

    The workers die with this process, however it ends: killed (even by SIGKILL: they are asked to be killed with
    their parent), or stopped by an exception (then the jobs not started are cancelled and the workers wait only
    for the job at hand). So nothing keeps running, or keeps files mapped, after a stopped run."""
    if workers <= 1 or len(jobs) <= 1:
        yield from map(function, jobs)
        return
    parent = os.getpid()
    pool = ProcessPoolExecutor(min(workers, len(jobs)), mp_context=worker_context(), initializer=die_with_parent,
                               initargs=(parent,))
    try:
        yield from pool.map(functools.partial(_orphaned, function, parent), jobs)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def decode_pcm16(job: tuple[int, str, str, dict[str, Any]]) -> tuple[int, str, Any, Any, str, str]:
    """Decoding worker of :meth:`molt.data.prepared.PrepareRun.decode` (kept here so workers need no torch).

    Args:
        job: ``(position, video_id, path, read_clip keyword arguments)``.

    Returns:
        ``(position, video_id, frames, audio, status, detail)``: frames uint8 ``(T, S, S, 3)`` and audio int16
        ``(T, R)`` (value / 32768 = float sample) with status ``"ok"`` or ``"silent"``; or ``None, None`` and the
        :class:`MediaError` reason and detail when the clip cannot be used.
    """
    position, video_id, path, options = job
    try:
        clip = read_clip(path, **options)
    except MediaError as error:
        return position, video_id, None, None, error.reason, error.detail
    except Exception as error:  # a decoder failure of a kind PyAV does not classify
        return position, video_id, None, None, "undecodable", f"{type(error).__name__}: {error}"
    pcm = np.clip(np.round(clip.audio * 32768.0), -32768, 32767).astype(np.int16)
    return position, video_id, clip.frames, pcm, "silent" if is_silent(clip.audio) else "ok", ""


def write_clip(path: PathLike, frames: np.ndarray, audio: np.ndarray, *, fps: float, sample_rate: int,
               crf: int = 18, preset: str = "superfast", audio_start: float = 0.0) -> None:
    """Write an mp4 file with H.264 video (libx264, yuv420p) and AAC mono audio.

    The file is written under a temporary name and renamed into place, so ``path`` never holds a partial file.
    Encoding is single-threaded and the default preset ``superfast`` is one whose output is a deterministic
    function of the input (with libx264 in PyAV 18, ``veryfast`` and slower presets were seen to give slightly
    different bitstreams for the same frames from run to run, which would break seeded data generation).

    Args:
        path: output ``.mp4`` path.
        frames: ``uint8`` array ``(N, H, W, 3)`` RGB; ``H`` and ``W`` must be even (yuv420p).
        audio: ``float32`` array ``(S,)`` in ``[-1, 1]`` (mono).
        fps: frame rate of ``frames``.
        sample_rate: sample rate of ``audio``.
        crf: x264 constant rate factor (lower = better quality).
        preset: x264 speed preset (see above before changing it).
        audio_start: seconds after the first frame at which the audio track starts (its stream start time; 0:
            together), to write a clip whose streams are out of step.
    """
    frames = np.asarray(frames)
    audio = np.asarray(audio)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected frames as uint8 (N, H, W, 3), got {frames.dtype} {frames.shape}")
    if frames.shape[1] % 2 or frames.shape[2] % 2:
        raise ValueError(f"H.264 with yuv420p needs an even frame size, got {frames.shape[2]}x{frames.shape[1]}")
    if audio.ndim != 1:
        raise ValueError(f"expected mono audio (S,), got shape {audio.shape}")
    if fps <= 0 or sample_rate <= 0 or audio_start < 0:
        raise ValueError(f"expected fps > 0, sample_rate > 0 and audio_start >= 0, got {fps}, {sample_rate} and "
                         f"{audio_start}")
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    container = av.open(str(temporary), mode="w", format="mp4")
    try:
        video = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        video.width, video.height = int(frames.shape[2]), int(frames.shape[1])
        video.pix_fmt = "yuv420p"
        video.codec_context.thread_count = 1
        video.options = {"crf": str(crf), "preset": preset}
        sound = container.add_stream("aac", rate=int(sample_rate), layout="mono")
        sound.codec_context.thread_count = 1
        video.codec_context.time_base = Fraction(1, 1) / video.codec_context.framerate
        for index, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts = index
            frame.time_base = video.codec_context.time_base
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        samples = np.clip(audio.astype(np.float32), -1.0, 1.0)[None, :]
        audio_frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples), format="flt", layout="mono")
        audio_frame.sample_rate = int(sample_rate)
        audio_frame.pts = int(round(audio_start * sample_rate))
        for packet in sound.encode(audio_frame):
            container.mux(packet)
        for packet in sound.encode():
            container.mux(packet)
    except BaseException:
        container.close()
        temporary.unlink(missing_ok=True)
        raise
    container.close()
    os.replace(temporary, path)
