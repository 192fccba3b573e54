"""Media-section bookkeeping: reading mids, directions and msids from SDP; placing tracks."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from callboard.rtc.sections import (
    MediaSection,
    media_sections,
    place,
    published_audio,
    receivable_audio,
)

OFFER = "\r\n".join(
    [
        "v=0",
        "o=- 1 2 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0 1 2 3 4",
        "a=msid-semantic: WMS",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111",
        "a=mid:0",
        "a=recvonly",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111",
        "a=mid:1",
        "a=recvonly",
        "m=video 9 UDP/TLS/RTP/SAVPF 96",
        "a=mid:2",
        "a=recvonly",
        "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
        "a=mid:3",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111",
        "a=mid:4",
        "a=sendonly",
        "a=msid:- TR_client_cid",
        "m=audio 0 UDP/TLS/RTP/SAVPF 111",
        "a=mid:5",
        "a=recvonly",
        "",
    ]
)


def test_media_sections_reads_mid_kind_direction_and_msid() -> None:
    sections = media_sections(OFFER)
    assert [s.mid for s in sections] == ["0", "1", "2", "3", "4", "5"]
    assert sections[0] == MediaSection("0", "audio", "recvonly")
    assert sections[3].kind == "application" and sections[3].direction == "sendrecv"
    assert sections[4] == MediaSection("4", "audio", "sendonly", "TR_client_cid")
    assert sections[5].port_zero


def test_published_and_receivable_audio() -> None:
    sections = media_sections(OFFER)
    assert published_audio(sections) == {"4": "TR_client_cid"}
    assert receivable_audio(sections) == ["0", "1"]  # not video, not the rejected one


def test_place_fills_free_sections_in_offer_order() -> None:
    placement = place(["0", "1"], {}, ["TR_a"])
    assert placement.assigned == {"0": "TR_a"} and placement.missing == 0


def test_place_keeps_tracks_where_they_are() -> None:
    placement = place(["0", "1"], {"1": "TR_b"}, ["TR_a", "TR_b"])
    assert placement.assigned == {"1": "TR_b", "0": "TR_a"}


def test_place_frees_sections_of_unwanted_tracks_for_new_ones() -> None:
    placement = place(["0"], {"0": "TR_old"}, ["TR_new"])
    assert placement.assigned == {"0": "TR_new"}


def test_place_reports_what_does_not_fit() -> None:
    placement = place(["0"], {}, ["TR_a", "TR_b", "TR_c"])
    assert placement.assigned == {"0": "TR_a"} and placement.missing == 2


def test_place_ignores_sections_no_longer_offered() -> None:
    placement = place(["1"], {"0": "TR_a"}, ["TR_a"])
    assert placement.assigned == {"1": "TR_a"}


@given(
    offered=st.lists(st.sampled_from("0123456789"), unique=True, max_size=6),
    wanted=st.lists(st.sampled_from(["TR_a", "TR_b", "TR_c", "TR_d"]), max_size=6),
    current=st.dictionaries(st.sampled_from("0123456789"), st.sampled_from(["TR_a", "TR_x"])),
)
def test_place_invariants(offered: list[str], wanted: list[str], current: dict[str, str]) -> None:
    placement = place(offered, current, wanted)
    values = list(placement.assigned.values())
    assert len(values) == len(set(values))  # a track on one section at most
    assert set(placement.assigned) <= set(offered)
    assert set(values) <= set(wanted)
    assert len(values) + placement.missing == len(set(wanted))
    for mid, sid in current.items():  # what sat well stays put
        if mid in offered and sid in wanted and list(current.values()).count(sid) == 1:
            assert placement.assigned.get(mid) == sid
