"""Text -> host speech for demo conversations (POST /v1/sessions/{id}/say): espeak-ng through a pipe.

`espeak-ng --stdin --stdout` reads the text on stdin (so no text can be mistaken for an option) and
writes a WAV stream on stdout; nothing touches the disk. The WAV is parsed here (espeak's streaming
header has placeholder sizes, so the data chunk runs to the end of the stream) and resampled to
16 kHz mono with the training resampler.
"""

from __future__ import annotations

import asyncio
import shutil
import struct

import numpy as np

from f2f.features.mel import resample_to_16k

ESPEAK = "espeak-ng"
TIMEOUT_S = 20.0


class SpeechError(RuntimeError):
    pass


def espeak_available() -> bool:
    return shutil.which(ESPEAK) is not None


def parse_wav_stream(data: bytes) -> tuple[np.ndarray, int]:
    """RIFF/WAVE PCM16 bytes (sizes may be placeholders) -> (float32 mono samples, sample rate)."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise SpeechError("espeak-ng did not produce a WAV stream")
    pos, rate, channels, bits = 12, None, 1, 16
    while pos + 8 <= len(data):
        chunk, size = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])[0]
        body = pos + 8
        if chunk == b"fmt ":
            fmt, channels, rate, _, _, bits = struct.unpack("<HHIIHH", data[body:body + 16])
            if fmt != 1 or bits != 16:
                raise SpeechError(f"unexpected WAV format {fmt} with {bits} bits")
        elif chunk == b"data":
            if rate is None:
                raise SpeechError("WAV data before its format")
            end = min(len(data), body + size)
            pcm = data[body:end]
            pcm = pcm[:len(pcm) // (2 * channels) * 2 * channels]
            samples = np.frombuffer(pcm, dtype="<i2").reshape(-1, channels).mean(axis=1)
            return (samples / 32768.0).astype(np.float32), rate
        pos = body + size + (size & 1)
    raise SpeechError("no audio in the WAV stream")


async def synthesize(text: str, voice: str = "en-us", words_per_minute: int = 160) -> np.ndarray:
    """-> 16 kHz mono float32 speech of `text`."""
    if not espeak_available():
        raise SpeechError("espeak-ng is not installed (apt-get install espeak-ng)")
    process = await asyncio.create_subprocess_exec(
        ESPEAK, "--stdin", "--stdout", "-v", voice, "-s", str(int(words_per_minute)),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(process.communicate(text.encode("utf-8")), TIMEOUT_S)
    except BaseException:
        if process.returncode is None:
            process.kill()
            await process.wait()
        raise
    if process.returncode != 0:
        raise SpeechError(f"espeak-ng failed ({process.returncode}): {err.decode(errors='replace')[-300:]}")
    samples, rate = parse_wav_stream(out)
    return resample_to_16k(samples, rate)
