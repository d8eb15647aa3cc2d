"""Gateway configuration, offer validation, codec preference, tokens, speech parsing, output tracks."""

from __future__ import annotations

import asyncio
import struct

import numpy as np
import pytest

from server.config import IceServer, ServerConfig, parse_ice_servers
from server.rtc import OfferError, codec_preferences, validate_offer
from server.speech import SpeechError, espeak_available, parse_wav_stream, synthesize


def test_environment_then_overrides():
    env = {"F2F_PORT": "9000", "F2F_MAX_SESSIONS": "8", "F2F_API_TOKENS": "a, b", "F2F_ICE_LOOPBACK": "true",
           "F2F_CORS_ORIGINS": "https://x.example", "F2F_DEFAULT_LAMBDA_VIDEO": "0.5",
           "F2F_ICE_SERVERS": '[{"urls": "turn:turn.example:3478", "username": "u", "credential": "c"}]',
           "UNRELATED": "1"}
    config = ServerConfig.from_env(env, port=9100)
    assert config.port == 9100 and config.max_sessions == 8 and config.api_tokens == ("a", "b")
    assert config.ice_loopback is True and config.cors_origins == ("https://x.example",)
    assert config.default_lambda_video == 0.5 and config.auth_enabled
    assert config.ice_servers == (IceServer(("turn:turn.example:3478",), "u", "c"),)
    assert config.ice_servers[0].to_json() == {"urls": ["turn:turn.example:3478"], "username": "u", "credential": "c"}


@pytest.mark.parametrize("bad", [{"backend": "magic"}, {"video_codec": "AV1"}, {"max_sessions": 0},
                                 {"port": 0}, {"media_timeout_s": 0}, {"default_lambda_video": -1},
                                 {"device": "tpu"}, {"api_tokens": ("",)}])
def test_invalid_settings_are_refused(bad):
    with pytest.raises(ValueError):
        ServerConfig(**bad)


def test_ice_servers_from_urls_and_turn_needs_credentials():
    assert parse_ice_servers("stun:a.example:3478, stun:b.example") == (
        IceServer(("stun:a.example:3478",)), IceServer(("stun:b.example",)))
    with pytest.raises(ValueError):
        IceServer(("turn:t.example",))
    with pytest.raises(ValueError):
        IceServer(("http://nope",))


OFFER = """v=0
o=- 1 1 IN IP4 0.0.0.0
s=-
t=0 0
a=group:BUNDLE 0
m=video 9 UDP/TLS/RTP/SAVPF 97 99
c=IN IP4 0.0.0.0
a=mid:0
a=sendrecv
a=rtpmap:97 VP8/90000
a=rtpmap:99 H264/90000
a=ice-ufrag:abcd
a=ice-pwd:abcdefghijklmnopqrstuvwx
a=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF
a=setup:actpass
""".replace("\n", "\r\n")


def test_offer_validation():
    assert [m.kind for m in validate_offer(OFFER, 65536).media] == ["video"]
    for bad, why in [("hello", "v=0"), (OFFER.split("m=video")[0], "no media"),
                     (OFFER.replace("a=ice-pwd:abcdefghijklmnopqrstuvwx\r\n", ""), "ICE"),
                     (OFFER.replace("m=video", "m=text"), "unsupported"), (OFFER, "larger")]:
        with pytest.raises(OfferError, match=why):
            validate_offer(bad, 100 if why == "larger" else 65536)


def test_codec_preference_puts_the_choice_first_and_keeps_the_rest():
    h264 = codec_preferences("video", "H264")
    assert h264[0].mimeType == "video/H264"
    assert {c.mimeType for c in h264} == {c.mimeType for c in codec_preferences("video", None)}
    assert codec_preferences("video", "VP8")[0].mimeType == "video/VP8"


def test_token_owner_is_constant_time_and_all_tokens_are_checked():
    from server.gateway import Gateway

    gateway = Gateway(ServerConfig(api_tokens=("alpha", "beta")), engine=object())
    assert gateway.token_owner("alpha") == 0 and gateway.token_owner("beta") == 1
    assert gateway.token_owner("gamma") == -1 and gateway.token_owner(None) == -1
    assert Gateway(ServerConfig(), engine=object()).token_owner(None) is None


def test_wav_stream_parsing_with_placeholder_sizes():
    pcm = (np.sin(np.arange(2205) / 10) * 10000).astype("<i2").tobytes()
    header = b"RIFF" + struct.pack("<I", 0x7FFFFFFF) + b"WAVE" + b"fmt " + struct.pack(
        "<IHHIIHH", 16, 1, 1, 22050, 44100, 2, 16) + b"data" + struct.pack("<I", 0x7FFFFFFF)
    samples, rate = parse_wav_stream(header + pcm)
    assert rate == 22050 and samples.shape == (2205,) and samples.dtype == np.float32
    with pytest.raises(SpeechError):
        parse_wav_stream(b"not a wav")


@pytest.mark.skipif(not espeak_available(), reason="espeak-ng is not installed")
def test_espeak_speech_through_pipes():
    samples = asyncio.run(synthesize("Hello there. -v is not an option here."))
    assert samples.dtype == np.float32 and 1.0 < len(samples) / 16000 < 6.0
    assert np.abs(samples).max() > 0.05


def test_host_audio_track_makes_one_opus_packet_per_frame():
    from server.output_tracks import HostAudioTrack

    async def main():
        track = HostAudioTrack()
        for _ in range(10):
            track.put(np.zeros(640, np.float32))
        frames = []
        while track._queue:
            frames.append(await track.recv())
        track.stop()
        return frames

    frames = asyncio.run(main())
    assert len(frames) >= 18  # 10 x 40 ms, minus what the resampler still holds
    assert all(f.samples == 960 and f.sample_rate == 48000 for f in frames)
    assert [f.pts for f in frames] == [960 * i for i in range(len(frames))]
