"""The pass-through adapter around aiortc (pinned 1.16.0): encoded Opus in, the same bytes out.

A real `RTCRtpReceiver` is fed RTP packets through its packet handler (its DTLS transport is a
stand-in, so no network is involved); what reaches the relay must be the payloads, unchanged, in
order, with their RTP timestamps, and nothing may be decoded. `ForwardTrack` must hand the
sender `av.Packet`s it only packetises, keep timestamps sane across source changes, and drop its
own oldest frames when its subscriber falls behind, never anyone else's.
"""

from __future__ import annotations

import asyncio
import fractions
from unittest import mock

import av
import pytest
from aiortc import RTCRtpReceiver
from aiortc.codecs.opus import OpusEncoder
from aiortc.rtcrtpparameters import RTCRtpCodecParameters, RTCRtpReceiveParameters
from aiortc.rtcrtpreceiver import RemoteStreamTrack
from aiortc.rtp import RtpPacket

from callboard.rtc.relay import (
    FRAME_TICKS,
    SINK_QUEUE_FRAMES,
    AdapterError,
    ForwardTrack,
    Relay,
    pass_through,
)

OPUS = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2, payloadType=111)


def fake_transport() -> mock.MagicMock:
    transport = mock.MagicMock()
    transport.state = "connected"
    transport._send_rtp = mock.AsyncMock()
    return transport


def rtp(seq: int, timestamp: int, payload: bytes) -> RtpPacket:
    return RtpPacket(payload_type=111, sequence_number=seq, timestamp=timestamp, ssrc=4242,
                     payload=payload)  # fmt: skip


async def test_the_receiver_hands_over_encoded_frames_unchanged_and_decodes_nothing() -> None:
    receiver = RTCRtpReceiver("audio", fake_transport())
    receiver._track = RemoteStreamTrack(kind="audio")  # as RTCPeerConnection sets it
    got: list[tuple[bytes, int]] = []
    adapter = pass_through(receiver, lambda payload, ts: got.append((payload, ts)))
    await receiver.receive(RTCRtpReceiveParameters(codecs=[OPUS]))
    payloads = [bytes([i]) * (20 + i) for i in range(6)]
    with mock.patch("aiortc.rtcrtpreceiver.get_decoder") as get_decoder:
        for i, payload in enumerate(payloads):
            await receiver._handle_rtp_packet(rtp(100 + i, 5000 + i * 960, payload), 0)
        await asyncio.sleep(0.05)
        get_decoder.assert_not_called()
    # every packet is a whole frame: each is out as soon as it arrived, none held back
    assert [p for p, _ in got] == payloads
    assert [ts for _, ts in got] == [i * 960 for i in range(6)]  # rebased to start at 0
    assert adapter.frames == 6
    await receiver.stop()  # the idle decoder thread ends


async def test_installing_twice_only_repoints_the_adapter() -> None:
    receiver = RTCRtpReceiver("audio", fake_transport())
    first = pass_through(receiver, lambda p, t: None)
    second = pass_through(receiver, lambda p, t: None)
    assert first is second
    await receiver.stop()


def test_an_aiortc_without_the_seam_is_refused_loudly() -> None:
    with pytest.raises(AdapterError):
        pass_through(mock.Mock(spec=[]), lambda p, t: None)


async def test_forward_track_yields_packets_the_sender_only_packs() -> None:
    track = ForwardTrack("TR_x")
    assert track.id == "TR_x" and track.kind == "audio"
    track.push(b"opus-1", 0)
    track.push(b"opus-2", 960)
    first, second = await track.recv(), await track.recv()
    assert isinstance(first, av.Packet)
    assert bytes(first) == b"opus-1" and bytes(second) == b"opus-2"
    assert first.time_base == fractions.Fraction(1, 48000)
    assert second.pts - first.pts == 960
    payloads, timestamp = OpusEncoder().pack(second)  # what RTCRtpSender does with a Packet
    assert payloads == [b"opus-2"] and timestamp == second.pts


async def test_a_new_source_continues_the_timeline() -> None:
    track = ForwardTrack("TR_a")
    track.push(b"a", 123_456)
    last = (await track.recv()).pts
    track.retarget("TR_b")
    assert track.id == "TR_b"
    track.push(b"b", 0)
    nxt = (await track.recv()).pts
    assert nxt - last >= FRAME_TICKS


async def test_a_late_packet_is_dropped_and_a_jump_back_starts_a_new_timeline() -> None:
    track = ForwardTrack()
    track.push(b"1", 100_000)
    assert not track.push(b"late", 100_000 - 960)  # reordered: the subscriber conceals it
    assert track.late == 1
    track.push(b"2", 5_000)  # far behind: the source restarted its timestamps
    one, two = await track.recv(), await track.recv()
    assert bytes(two) == b"2" and two.pts == one.pts + FRAME_TICKS


async def test_a_slow_subscriber_loses_its_oldest_frames_and_delays_nobody() -> None:
    relay = Relay("TR_x")
    slow, fast = ForwardTrack(), ForwardTrack()
    relay.add("PA_slow", slow)
    relay.add("PA_fast", fast)
    received: list[bytes] = []
    for i in range(SINK_QUEUE_FRAMES * 3):
        relay.push(i.to_bytes(2, "big"), i * 960)
        received.append(bytes(await fast.recv()))  # the fast one keeps up
    assert len(received) == SINK_QUEUE_FRAMES * 3 and fast.dropped == 0
    assert slow.dropped == SINK_QUEUE_FRAMES * 2
    kept = [bytes(await slow.recv()) for _ in range(SINK_QUEUE_FRAMES)]
    assert kept == received[-SINK_QUEUE_FRAMES:]  # the newest audio survives


async def test_a_muted_relay_forwards_nothing() -> None:
    relay = Relay("TR_x")
    sink = ForwardTrack()
    relay.add("PA_b", sink)
    relay.muted = True
    relay.push(b"x", 0)
    assert sink.forwarded == 0 and relay.frames_in == 1
    relay.muted = False
    relay.push(b"y", 960)
    assert bytes(await sink.recv()) == b"y"


async def test_a_stopped_track_ends_its_sender_and_takes_no_more() -> None:
    track = ForwardTrack()
    track.push(b"x", 0)
    track.stop()
    from aiortc.mediastreams import MediaStreamError

    with pytest.raises(MediaStreamError):
        await track.recv()
    assert not track.push(b"y", 960)


def test_removing_a_sink() -> None:
    relay = Relay("TR_x")
    sink = ForwardTrack()
    relay.add("PA_b", sink)
    assert relay.remove("PA_b") is sink and relay.remove("PA_b") is None
