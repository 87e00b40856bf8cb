"""The pure SDP rules of NEGOTIATION.md §4, checked on the document's own
examples (no processes)."""

from tether_peer import role_of
from tether_peer.sdp import Origin, parse_origin, rejection, tag_answer, tag_offer, untag

OFFER = ("v=0\r\no=- 4611731400430051336 7 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n"
         "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:0\r\n")


def test_roles_are_byte_order() -> None:
    assert role_of("ab", "abc") == "offerer"
    assert role_of("Zed", "abe") == "offerer"
    assert role_of("abe", "Zed") == "answerer"
    assert role_of("x", "x") is None


def test_restart_offer_matches_the_example_of_4_6() -> None:
    tagged = tag_offer(OFFER, 4, ice_restart=True)
    assert "a=group:BUNDLE 0\r\na=x-tether-seq:4\r\na=x-tether-ice-restart\r\nm=application" in tagged
    tags, body = untag(tagged)
    assert (tags.seq, tags.ice_restart) == (4, True)
    assert body == OFFER


def test_rejection_is_exactly_two_lines() -> None:
    origin = parse_origin(OFFER)
    assert origin == Origin("4611731400430051336", 7)
    assert rejection(origin, None, "unknown-session") == (
        "a=x-tether-offer:4611731400430051336 7\r\na=x-tether-reject:unknown-session\r\n")
    tags, body = untag(rejection(origin, 4, "unknown-session"))
    assert tags.answers == ("4611731400430051336", 7, 4) and tags.rejected == "unknown-session"
    assert body == ""


def test_answers_name_their_offer_and_untag_keeps_every_other_byte() -> None:
    answer = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n"
    tagged = tag_answer(answer, Origin("42", 3), 9)
    tags, body = untag(tagged)
    assert tags.answers == ("42", 3, 9) and body == answer


def test_malformed_numbers_and_unknown_tags() -> None:
    tags, body = untag("v=0\na=x-tether-seq:+5\na=x-tether-future:1\r\nm=x\n")
    assert tags.seq is None and tags.unknown == ["a=x-tether-future:1"]
    assert body == "v=0\nm=x\n"
    tags, _ = untag("a=x-tether-reject:whatever\r\n")
    assert tags.rejected == "failed"
    tags, _ = untag("a=x-tether-seq:18446744073709551616\r\n")
    assert tags.seq is None
