"""Access tokens: what livekit-api's AccessToken makes verifies here; what we mint verifies there.

Every refusal is an `Unauthenticated` whose message says which check failed, because a developer
whose worker retries a 401 for two minutes (livekit-wire §1) has only that message to go on.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from livekit import api
from livekit.protocol.agent_dispatch import RoomAgentDispatch
from livekit.protocol.room import RoomConfiguration

from callboard.protocol import tokens
from callboard.protocol.errors import Unauthenticated
from callboard.protocol.tokens import JobClaim, JobTokenRequest, bearer, mint_job_token, verify

KEY = "APIk3yFor7ests"
SECRET = "a-secret-of-at-least-thirty-two-bytes-for-HS256"
SECRETS = {KEY: SECRET}
NOW = 1_750_000_000


def lookup(key: str) -> str | None:
    return SECRETS.get(key)


def lk_token(**build: Any) -> str:
    """A token made by the real livekit-api AccessToken; keyword names are its `with_*` methods."""
    token = api.AccessToken(KEY, SECRET)
    for name, value in build.items():
        getattr(token, f"with_{name}")(value)
    return token.to_jwt()


def raw_token(payload: Any, *, secret: str = SECRET, header: dict[str, Any] | None = None) -> str:
    """A hand-made HS256 JWT, for payloads PyJWT's encoder refuses to produce."""

    def part(obj: Any) -> bytes:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=")

    signing_input = part(header or {"alg": "HS256", "typ": "JWT"}) + b"." + part(payload)
    digest = hmac.new(secret.encode(), signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + base64.urlsafe_b64encode(digest).rstrip(b"=")).decode()


def claims_for(**extra: Any) -> dict[str, Any]:
    return {"iss": KEY, "sub": "alice", "nbf": NOW, "exp": NOW + 600, **extra}


def job_request(**overrides: Any) -> JobTokenRequest:
    fields: dict[str, Any] = {
        "api_key": KEY,
        "api_secret": SECRET,
        "room": "room-1",
        "identity": "agent-AJ_abc",
        "name": "my agent",
        "metadata": '{"k": 1}',
        "attributes": {"lk.agent_name": "my-agent", "team": "jack"},
        "job": JobClaim("AD_dispatch00001", "AJ_job000000001", 2),
    }
    return JobTokenRequest(**{**fields, **overrides})


# -- tokens made by livekit-api --------------------------------------------------------------------


def test_a_room_admin_token_from_livekit_api_verifies() -> None:
    token = lk_token(identity="svc", grants=api.VideoGrants(room_admin=True, room="r1",
                                                           room_list=True, room_create=True))
    claims = verify(token, lookup)
    assert claims.api_key == KEY and claims.identity == "svc"
    assert claims.video.room_admin and claims.video.room_list and claims.video.room_create
    assert claims.video.room == "r1"
    assert not claims.video.room_join and not claims.video.agent and not claims.video.room_record


def test_a_livekit_agents_worker_token_verifies() -> None:
    """livekit-agents' own worker token: video{agent, canPublish, canSubscribe, canPublishData},
    sub "", 6 h (livekit-wire §3)."""
    grants = api.VideoGrants(agent=True, can_publish=True, can_subscribe=True,
                             can_publish_data=True)
    claims = verify(lk_token(grants=grants), lookup)
    assert claims.video.agent and claims.identity == ""
    assert claims.video.can_publish and claims.video.can_subscribe and claims.video.can_publish_data
    assert abs(claims.expires_at_s - (time.time() + 6 * 3600)) < 5


def test_a_join_token_carries_identity_name_kind_metadata_and_attributes() -> None:
    token = lk_token(
        identity="bob", name="Bob B.", kind="sip", metadata='{"seat": 4}',
        attributes={"sip.callID": "SCL_1", "emoji": "☎"},
        grants=api.VideoGrants(room_join=True, room="call-1", can_publish=False, hidden=True,
                               can_update_own_metadata=True),
        sha256="abc=",
    )
    claims = verify(token, lookup)
    assert (claims.identity, claims.name, claims.kind) == ("bob", "Bob B.", "sip")
    assert claims.metadata == '{"seat": 4}' and claims.sha256 == "abc="
    assert claims.attributes == {"sip.callID": "SCL_1", "emoji": "☎"}
    assert claims.video.room_join and claims.video.room == "call-1"
    assert not claims.video.can_publish and claims.video.hidden
    assert claims.video.can_update_own_metadata
    assert claims.job is None and claims.room_config is None


def test_room_config_with_agents_is_kept_as_protobuf_json() -> None:
    config = RoomConfiguration(agents=[RoomAgentDispatch(agent_name="my-agent-jack",
                                                         metadata="hello")])
    token = lk_token(identity="u", room_config=config,
                     grants=api.VideoGrants(room_join=True, room="r"))
    claims = verify(token, lookup)
    assert claims.room_config == {"agents": [{"agentName": "my-agent-jack", "metadata": "hello"}]}


def test_sip_grants_are_kept() -> None:
    claims = verify(lk_token(sip_grants=api.SIPGrants(admin=True, call=False)), lookup)
    assert claims.sip == {"admin": True, "call": False}


def test_the_dev_credentials_verify() -> None:
    token = api.AccessToken("devkey", "secret").with_grants(api.VideoGrants(agent=True)).to_jwt()
    assert verify(token, {"devkey": "secret"}.get).video.agent


# -- refusals, each saying why ---------------------------------------------------------------------


def test_bad_signature() -> None:
    token = api.AccessToken(KEY, SECRET + "-not").to_jwt()
    with pytest.raises(Unauthenticated, match=f"invalid token signature for API key {KEY}"):
        verify(token, lookup)


def test_unknown_key() -> None:
    token = api.AccessToken("APIunknown000", SECRET).to_jwt()
    with pytest.raises(Unauthenticated, match="unknown API key 'APIunknown000'"):
        verify(token, lookup)


def test_expired_beyond_the_leeway() -> None:
    token = lk_token(ttl=datetime.timedelta(seconds=-(tokens.LEEWAY_S + 30)))
    with pytest.raises(Unauthenticated, match=r"token expired 9\d s ago, beyond the 60 s leeway"):
        verify(token, lookup)


def test_expired_within_the_leeway_is_accepted() -> None:
    token = lk_token(identity="late", ttl=datetime.timedelta(seconds=-(tokens.LEEWAY_S - 20)))
    assert verify(token, lookup).identity == "late"


@pytest.mark.parametrize(("after_exp_s", "accepted"), [(0, True), (59, True), (60, False),
                                                       (61, False), (3600, False)])
def test_the_leeway_boundary_on_the_passed_clock(after_exp_s: int, accepted: bool) -> None:
    token = raw_token(claims_for())
    at = NOW + 600 + after_exp_s
    if accepted:
        assert verify(token, lookup, now_s=at).identity == "alice"
    else:
        with pytest.raises(Unauthenticated, match="token expired"):
            verify(token, lookup, now_s=at)


def test_nbf_in_the_future() -> None:
    token = raw_token(claims_for(nbf=NOW + 120))
    with pytest.raises(Unauthenticated, match=r"not valid yet: nbf is 120 s in the future"):
        verify(token, lookup, now_s=NOW)
    assert verify(token, lookup, now_s=NOW + 61).identity == "alice"  # within the leeway


def test_the_passed_clock_governs_nbf_too() -> None:
    """A fresh livekit-api token judged an hour earlier is not valid yet: `now_s` is the clock."""
    with pytest.raises(Unauthenticated, match="nbf"):
        verify(lk_token(), lookup, now_s=time.time() - 3600)


def test_iat_in_the_future() -> None:
    with pytest.raises(Unauthenticated, match="issued in the future"):
        verify(raw_token(claims_for(iat=NOW + 3600)), lookup, now_s=NOW)


def test_missing_exp() -> None:
    token = jwt.encode({"iss": KEY, "sub": "x"}, SECRET, algorithm="HS256")
    with pytest.raises(Unauthenticated, match="missing the required claim 'exp'"):
        verify(token, lookup)


@pytest.mark.parametrize("exp", ["tomorrow", True, [1]])
def test_exp_that_is_not_a_number(exp: object) -> None:
    with pytest.raises(Unauthenticated, match="exp"):
        verify(raw_token(claims_for(exp=exp)), lookup, now_s=NOW)


def test_missing_issuer() -> None:
    token = jwt.encode({"sub": "x", "exp": NOW + 60}, SECRET, algorithm="HS256")
    with pytest.raises(Unauthenticated, match=r"no issuer \(iss\)"):
        verify(token, lookup)


@pytest.mark.parametrize("garbage", ["", "not a jwt", "a.b.c", "eyJhbGciOiJIUzI1NiJ9.e30",
                                     "Bearer x.y.z"])
def test_not_a_jwt(garbage: str) -> None:
    with pytest.raises(Unauthenticated, match="malformed token"):
        verify(garbage, lookup)


@pytest.mark.parametrize("algorithm", ["HS512", "HS384"])
def test_another_hmac_algorithm_is_refused(algorithm: str) -> None:
    token = jwt.encode(claims_for(exp=int(time.time()) + 60), SECRET, algorithm=algorithm)
    with pytest.raises(Unauthenticated, match=f"algorithm is '{algorithm}': only HS256"):
        verify(token, lookup)


def test_alg_none_is_refused() -> None:
    token = jwt.encode(claims_for(exp=int(time.time()) + 60), "", algorithm="none")
    with pytest.raises(Unauthenticated, match="algorithm is 'none': only HS256"):
        verify(token, lookup)


def test_a_header_without_alg_is_refused() -> None:
    with pytest.raises(Unauthenticated, match="algorithm is None"):
        verify(raw_token(claims_for(), header={"typ": "JWT"}), lookup, now_s=NOW)


def test_the_key_is_not_looked_up_for_a_wrong_algorithm() -> None:
    asked: list[str] = []

    def spy(key: str) -> str | None:
        asked.append(key)
        return SECRET

    with pytest.raises(Unauthenticated):
        verify(jwt.encode(claims_for(), "", algorithm="none"), spy)
    assert asked == []


@pytest.mark.parametrize(
    ("claim", "value", "message"),
    [
        ("video", {"roomAdmin": "false"}, "video.roomAdmin must be true or false"),
        ("video", {"agent": 1}, "video.agent must be true or false"),
        ("video", {"room": 7}, "video.room must be a string"),
        ("video", ["roomAdmin"], "'video' must be an object"),
        ("attributes", {"a": 1}, "'attributes' must map strings to strings"),
        ("attributes", ["a"], "'attributes' must be an object"),
        ("metadata", {"a": 1}, "'metadata' must be a string"),
        ("roomConfig", "agents", "'roomConfig' must be an object"),
        ("sip", True, "'sip' must be an object"),
    ],
)
def test_claims_of_the_wrong_type_are_refused(claim: str, value: object, message: str) -> None:
    """livekit-server fails to unmarshal these; reading `"false"` as granted would be worse."""
    with pytest.raises(Unauthenticated, match=message):
        verify(raw_token(claims_for(**{claim: value})), lookup, now_s=NOW)


def test_null_grant_flags_take_their_defaults() -> None:
    video = {"roomJoin": None, "canPublish": None, "room": None}
    claims = verify(raw_token(claims_for(video=video)), lookup, now_s=NOW)
    assert not claims.video.room_join and claims.video.can_publish and claims.video.room == ""


def test_an_unauthenticated_error_is_a_401() -> None:
    with pytest.raises(Unauthenticated) as info:
        verify("x", lookup)
    assert info.value.code == "unauthenticated" and info.value.http_status == 401


# -- job tokens ------------------------------------------------------------------------------------


def test_a_job_token_verifies_with_livekit_api() -> None:
    token = mint_job_token(job_request())
    claims = api.TokenVerifier(KEY, SECRET).verify(token)
    assert claims.identity == "agent-AJ_abc" and claims.name == "my agent"
    assert claims.kind == "agent" and claims.metadata == '{"k": 1}'
    assert claims.attributes == {"lk.agent_name": "my-agent", "team": "jack"}
    assert claims.video is not None
    assert claims.video.room_join and claims.video.room == "room-1" and claims.video.agent
    assert not claims.video.room_admin and not claims.video.room_create


def test_a_job_token_lives_one_hour_and_is_room_scoped() -> None:
    token = mint_job_token(job_request(), now_s=NOW + 0.7)
    payload = jwt.decode(token, options={"verify_signature": False})
    assert (payload["nbf"], payload["exp"]) == (NOW, NOW + 3600)
    assert payload["iss"] == KEY and jwt.get_unverified_header(token)["alg"] == "HS256"
    assert payload["video"]["room"] == "room-1" and payload["video"]["roomJoin"] is True


def test_a_job_token_parses_back_with_its_job_claim() -> None:
    token = mint_job_token(job_request(), now_s=NOW)
    claims = verify(token, lookup, now_s=NOW + 10)
    assert claims.job == JobClaim("AD_dispatch00001", "AJ_job000000001", 2)
    assert claims.kind == "agent" and claims.identity == "agent-AJ_abc"
    assert claims.expires_at_s == NOW + tokens.JOB_TOKEN_TTL_S
    with pytest.raises(Unauthenticated, match="expired"):
        verify(token, lookup, now_s=NOW + 3600 + 61)


def test_a_job_token_carries_the_worker_permissions() -> None:
    token = mint_job_token(job_request(can_publish=False, can_subscribe=False, hidden=True,
                                       can_update_own_metadata=False))
    video = verify(token, lookup).video
    assert not video.can_publish and not video.can_subscribe and video.hidden
    assert video.can_publish_data and not video.can_update_own_metadata


def test_a_job_token_without_identity_gets_livekits_default() -> None:
    token = mint_job_token(job_request(identity=""))
    assert verify(token, lookup).identity == "agent-AJ_job000000001"


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"identity": "", "metadata": "", "attributes": {}},
        {"name": 'Ágent "q" \\ \u2028 😀', "room": "ルーム", "metadata": "\x00\x1f\t"},
        {"attributes": {"é": "ü", "lk.agent_name": ""}, "hidden": True, "can_publish": False},
    ],
)
def test_a_job_token_body_is_compact_json_of_its_claims(overrides: dict[str, Any]) -> None:
    """Written by hand for speed, it must be what `json.dumps` makes of the same claims."""
    req = job_request(**overrides)
    claims: dict[str, Any] = {
        "iss": req.api_key, "sub": req.identity or f"agent-{req.job.job_id}",
        "nbf": NOW, "exp": NOW + 3600, "name": req.name, "kind": "agent",
        "video": {
            "roomJoin": True, "room": req.room, "agent": True, "canPublish": req.can_publish,
            "canSubscribe": req.can_subscribe, "canPublishData": req.can_publish_data,
            "canUpdateOwnMetadata": req.can_update_own_metadata, "hidden": req.hidden,
        },
        "callboard": {"dispatch": req.job.dispatch_id, "job": req.job.job_id,
                      "attempt": req.job.attempt},
    }
    if req.metadata:
        claims["metadata"] = req.metadata
    if req.attributes:
        claims["attributes"] = dict(req.attributes)
    segment = mint_job_token(req, now_s=NOW).split(".")[1]
    body = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    assert body == json.dumps(claims, separators=(",", ":")).encode()


def test_empty_metadata_and_attributes_are_left_out() -> None:
    token = mint_job_token(job_request(metadata="", attributes={}))
    payload = jwt.decode(token, options={"verify_signature": False})
    assert "metadata" not in payload and "attributes" not in payload
    claims = verify(token, lookup)
    assert claims.metadata == "" and claims.attributes == {}


@pytest.mark.parametrize("job", [{"dispatch": "AD_1", "job": "AJ_1", "attempt": True},
                                 {"dispatch": "AD_1", "job": "AJ_1", "attempt": "2"},
                                 {"dispatch": "AD_1", "attempt": 1}, "AD_1"])
def test_a_malformed_job_claim_reads_as_none(job: object) -> None:
    assert verify(raw_token(claims_for(callboard=job)), lookup, now_s=NOW).job is None


def test_sign_makes_a_token_verify_accepts() -> None:
    token = tokens.sign(claims_for(video={"agent": True}), SECRET)
    assert verify(token, lookup, now_s=NOW).video.agent


@settings(max_examples=60, deadline=None)
@given(
    identity=st.text(min_size=1),
    name=st.text(),
    metadata=st.text(),
    attributes=st.dictionaries(st.text(), st.text(), max_size=5),
    room=st.text(min_size=1, max_size=40),
    attempt=st.integers(min_value=1, max_value=2**31),
)
def test_any_identity_name_metadata_and_attributes_round_trip(
    identity: str, name: str, metadata: str, attributes: dict[str, str], room: str, attempt: int
) -> None:
    req = job_request(identity=identity, name=name, metadata=metadata, attributes=attributes,
                      room=room, job=JobClaim("AD_x", "AJ_y", attempt))
    claims = verify(mint_job_token(req, now_s=NOW), lookup, now_s=NOW)
    assert (claims.identity, claims.name, claims.metadata) == (identity, name, metadata)
    assert claims.attributes == attributes and claims.video.room == room
    assert claims.job == JobClaim("AD_x", "AJ_y", attempt)
    lk = api.TokenVerifier(KEY, SECRET, leeway=datetime.timedelta(days=36500)).verify(
        mint_job_token(req, now_s=NOW)
    )
    assert (lk.identity, lk.name, lk.metadata) == (identity, name, metadata)
    assert (lk.attributes or {}) == attributes


# -- the Authorization header ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc.def.ghi", "abc.def.ghi"),
        ("bearer abc", "abc"),
        ("BEARER   abc  ", "abc"),
        ("Bearer\tabc", "abc"),
        ("abc.def.ghi", "abc.def.ghi"),  # a bare token
        ("  abc  ", "abc"),
        (None, None),
        ("", None),
        ("   ", None),
        ("Bearer", None),
        ("Bearer   ", None),
        ("Basic dXNlcjpwYXNz", None),
        ("Bearer a b", None),
    ],
)
def test_bearer(header: str | None, token: str | None) -> None:
    assert bearer(header) == token


# -- the standard-library parser, held to what PyJWT said ------------------------------------------
#
# `verify` parses each token once with the standard library. Until it did, PyJWT parsed it three
# times; that implementation is kept here, verbatim, as the reference: on every token below both
# must accept with the same claims or refuse with the same message.


def pyjwt_verify(token: str, secret_for_key: Any, *, now_s: float | None = None) -> Any:
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise Unauthenticated(f"malformed token: {exc}") from None
    alg = header.get("alg")
    if alg != "HS256":
        raise Unauthenticated(f"token algorithm is {alg!r}: only HS256 is accepted")
    try:
        unverified = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise Unauthenticated(f"malformed token: {exc}") from None
    api_key = unverified.get("iss")
    if not isinstance(api_key, str) or not api_key:
        raise Unauthenticated("token has no issuer (iss): it must name the API key that signed it")
    secret = secret_for_key(api_key)
    if secret is None:
        raise Unauthenticated(f"unknown API key {api_key!r} (revoked, or never issued)")
    options: Any = {"require": ["exp"], "verify_exp": False, "verify_nbf": False,
                    "verify_iat": False, "verify_aud": False}
    try:
        payload = jwt.decode(token, secret, algorithms=["HS256"], issuer=api_key, options=options)
    except jwt.InvalidSignatureError:
        raise Unauthenticated(f"invalid token signature for API key {api_key}") from None
    except jwt.MissingRequiredClaimError as exc:
        raise Unauthenticated(f"token is missing the required claim {exc.claim!r}") from None
    except jwt.PyJWTError as exc:
        raise Unauthenticated(f"invalid token: {exc}") from None
    tokens._check_times(payload, api_key, time.time() if now_s is None else now_s)
    return tokens._claims_from_payload(api_key, payload)


def outcome(check: Any, token: str, secrets: dict[str, str] | None = None) -> object:
    try:
        return check(token, (secrets or SECRETS).get, now_s=NOW + 10)
    except Exception as exc:  # compared, type and message, with the reference's
        return (type(exc).__name__, str(exc))


def assert_same_as_pyjwt(token: str, secrets: dict[str, str] | None = None) -> object:
    ours = outcome(verify, token, secrets)
    assert ours == outcome(pyjwt_verify, token, secrets)
    return ours


def b64(data: bytes | str) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def signed(header_segment: str, payload_segment: str, secret: str = SECRET) -> str:
    """header.payload as given (padding, odd spellings and all), signed over exactly those bytes."""
    signing_input = f"{header_segment}.{payload_segment}"
    digest = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(digest)}"


GOOD = raw_token(claims_for(video={"agent": True}))
GOOD_HEADER, GOOD_PAYLOAD, GOOD_SIGNATURE = GOOD.split(".")
HS256 = b64('{"alg":"HS256","typ":"JWT"}')
PAYLOAD = b64(json.dumps(claims_for()))


def test_the_reference_accepts_what_verify_accepts() -> None:
    claims = assert_same_as_pyjwt(GOOD)
    assert isinstance(claims, tokens.TokenClaims) and claims.video.agent


@pytest.mark.parametrize(
    "token",
    [
        # shape
        "", ".", "..", "...", "a", "a.b", "a.b.c.d", f"{GOOD}.", f"{GOOD}.x", f".{GOOD}",
        f"{GOOD_HEADER}..{GOOD_SIGNATURE}", f"{GOOD_HEADER}.{GOOD_PAYLOAD}.",
        f"{GOOD_HEADER}.{GOOD_PAYLOAD}.{GOOD_PAYLOAD}.{GOOD_SIGNATURE}",
        f" {GOOD}", f"{GOOD} ", f"{GOOD}\n", GOOD.replace(".", ". ", 1),
        # the alphabet, padding and canonical spelling of each segment
        f"{GOOD_HEADER}=.{GOOD_PAYLOAD}.{GOOD_SIGNATURE}",
        f"{GOOD_HEADER}.{GOOD_PAYLOAD}.{GOOD_SIGNATURE}=",
        f"{GOOD_HEADER}.{GOOD_PAYLOAD}.{GOOD_SIGNATURE}===",
        f"{GOOD_HEADER}.{GOOD_PAYLOAD}=.{GOOD_SIGNATURE}",
        f"{GOOD_HEADER}.{GOOD_PAYLOAD}====.{GOOD_SIGNATURE}",
        f"={GOOD_HEADER}.{GOOD_PAYLOAD}.{GOOD_SIGNATURE}",
        f"{GOOD_HEADER}.{GOOD_PAYLOAD}x.{GOOD_SIGNATURE}",  # length 1 mod 4
        GOOD.replace("-", "+"), GOOD.replace("_", "/"), GOOD[:-1] + "!", GOOD[:-1] + "é",
        GOOD[:-1] + chr(ord(GOOD[-1]) ^ 1),
        f"{GOOD_HEADER}.{GOOD_PAYLOAD}.{GOOD_SIGNATURE[:-1]}",
        # headers
        signed(b64("not json"), PAYLOAD), signed(b64("[1]"), PAYLOAD),
        signed(b64('"HS256"'), PAYLOAD),
        signed(b64("null"), PAYLOAD), signed(b64(b"\xff\xfe\xfa"), PAYLOAD), signed("", PAYLOAD),
        signed(b64("[" * 100_000), PAYLOAD),
        signed(b64('{"alg":"HS256","alg":"none"}'), PAYLOAD),
        signed(b64('{"alg":"none","alg":"HS256"}'), PAYLOAD),
        signed(b64('{"alg":"hs256"}'), PAYLOAD), signed(b64('{"alg":null}'), PAYLOAD),
        signed(b64('{"alg":["HS256"]}'), PAYLOAD), signed(b64('{"alg":""}'), PAYLOAD),
        signed(b64('{"alg":"RS256"}'), PAYLOAD),
        signed(b64('{"alg":"HS256","typ":"xyz"}'), PAYLOAD),
        signed(b64('{"alg":"HS256","kid":7}'), PAYLOAD),
        signed(b64('{"alg":"HS256","kid":"k1"}'), PAYLOAD),
        signed(b64('{"alg":"HS256","crit":"b64"}'), PAYLOAD),
        signed(b64('{"alg":"HS256","crit":[]}'), PAYLOAD),
        signed(b64('{"alg":"HS256","crit":[1]}'), PAYLOAD),
        signed(b64('{"alg":"HS256","crit":["exp"]}'), PAYLOAD),
        signed(b64('{"alg":"HS256","crit":["b64"]}'), PAYLOAD),
        signed(b64('{"alg":"HS256","crit":["b64"],"b64":true}'), PAYLOAD),
        signed(b64('{"alg":"HS256","b64":false}'), PAYLOAD),
        signed(b64('{"alg":"HS256","b64":false}'), ""),
        signed(b64('{"alg":"HS256","b64":false,"crit":["b64"]}'), ""),
        signed(b64('{"alg":"HS256","b64":0}'), PAYLOAD),
        signed(b64('{"alg":"none","kid":1}'), PAYLOAD),
        # payloads
        signed(HS256, b64("not json")), signed(HS256, b64("[1]")), signed(HS256, b64("7")),
        signed(HS256, ""), signed(HS256, b64("{")), signed(HS256, b64(b"\xff")),
        signed(HS256, b64("[" * 100_000)), signed(HS256, b64("{}")),
        signed(HS256, b64('{"iss":""}')), signed(HS256, b64('{"iss":7}')),
        signed(HS256, b64(json.dumps(claims_for(sub=7)))),
        signed(HS256, b64(json.dumps(claims_for(sub=None)))),
        signed(HS256, b64(json.dumps(claims_for(jti=7)))),
        signed(HS256, b64(json.dumps(claims_for(jti="j1")))),
        signed(HS256, b64(json.dumps(claims_for(exp=None)))),
        signed(HS256, b64(json.dumps(claims_for(exp=0)))),
        signed(HS256, b64(json.dumps(claims_for(exp=NOW + 0.5)))),
        signed(HS256, b64(json.dumps(claims_for(nbf=None, iat=NOW - 5)))),
        signed(HS256, b64(json.dumps(claims_for(iat="soon")))),
        signed(HS256, b64(json.dumps(claims_for(aud="someone")))),
        signed(HS256, b64(json.dumps(claims_for(iss=KEY.lower())))),
        signed(HS256, b64(json.dumps(claims_for(), ensure_ascii=False))),
        signed(HS256, b64(json.dumps(claims_for(name="Zoë ☎")).encode("utf-16"))),
        signed(HS256, b64(json.dumps(claims_for()) + " \n")),
        signed(HS256, b64(json.dumps(claims_for()) + " {}")),
        # signatures
        signed(HS256, PAYLOAD, secret=SECRET + "x"), f"{HS256}.{PAYLOAD}.",
        f"{HS256}.{PAYLOAD}.{b64(b'short')}",
        lk_token(), api.AccessToken(KEY, SECRET + "x").to_jwt(), mint_job_token(job_request()),
        jwt.encode(claims_for(), SECRET, algorithm="HS256", headers={"kid": "k"}),
        jwt.encode(claims_for(), SECRET, algorithm="HS512"),
        jwt.encode(claims_for(), "", algorithm="none"),
    ],
)
def test_verify_refuses_and_accepts_exactly_as_pyjwt_did(token: str) -> None:
    assert_same_as_pyjwt(token)


def test_a_token_that_is_not_even_utf8_is_malformed_where_pyjwt_crashed() -> None:
    """The one deliberate difference: PyJWT's `str.encode` raised UnicodeEncodeError (a 500)."""
    token = GOOD[:-1] + "\ud800"
    with pytest.raises(UnicodeEncodeError):
        pyjwt_verify(token, lookup, now_s=NOW)
    with pytest.raises(Unauthenticated, match="malformed token: Invalid crypto padding"):
        verify(token, lookup, now_s=NOW)


@pytest.mark.parametrize("secret", ["", "{\"kty\": \"oct\", \"k\": \"abc\"}", "ssh-rsa AAAAB3Nza",
                                    "-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----",
                                    "secret", "é" * 40])
def test_secrets_are_vetted_as_pyjwt_vetted_them(secret: str) -> None:
    token = signed(HS256, PAYLOAD, secret=secret)
    result = assert_same_as_pyjwt(token, {KEY: secret})
    if secret in ("", "secret", "é" * 40):
        assert isinstance(result, tokens.TokenClaims) or "HMAC key must not be empty" in str(result)
    else:
        assert "should not be used" in str(result)


def test_a_key_shaped_secret_is_refused_every_time_not_just_once() -> None:
    """The vetting is memoised per secret; a refusal is not, so it cannot be skipped later."""
    pem = {KEY: "-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----"}
    token = signed(HS256, PAYLOAD, secret=pem[KEY])
    for _ in range(3):
        with pytest.raises(Unauthenticated, match="invalid token: The specified key is an"):
            verify(token, pem.get, now_s=NOW)


def test_a_revoked_key_is_unknown_even_though_its_secret_was_seen() -> None:
    secrets = dict(SECRETS)
    token = raw_token(claims_for())
    assert verify(token, secrets.get, now_s=NOW).identity == "alice"
    del secrets[KEY]
    with pytest.raises(Unauthenticated, match="unknown API key"):
        verify(token, secrets.get, now_s=NOW)


def test_a_reused_token_is_judged_on_the_clock_every_time() -> None:
    token = raw_token(claims_for(iat=NOW))
    first = verify(token, lookup, now_s=NOW)
    assert verify(token, lookup, now_s=NOW) == first
    with pytest.raises(Unauthenticated, match="token expired 61 s ago"):
        verify(token, lookup, now_s=NOW + 600 + tokens.LEEWAY_S + 1)
    with pytest.raises(Unauthenticated, match="not valid yet"):
        verify(token, lookup, now_s=NOW - tokens.LEEWAY_S - 1)
    assert verify(token, lookup, now_s=NOW + 1) == first


def test_a_reused_token_is_checked_against_its_keys_current_secret() -> None:
    secrets = dict(SECRETS)
    token = raw_token(claims_for())
    assert verify(token, secrets.get, now_s=NOW).identity == "alice"
    secrets[KEY] = SECRET + "-rotated"
    for _ in range(2):
        with pytest.raises(Unauthenticated, match=f"invalid token signature for API key {KEY}"):
            verify(token, secrets.get, now_s=NOW)
    secrets[KEY] = SECRET
    assert verify(token, secrets.get, now_s=NOW).identity == "alice"


def test_a_reused_token_looks_its_key_up_each_time() -> None:
    asked: list[str] = []

    def counting(key: str) -> str | None:
        asked.append(key)
        return lookup(key)

    token = raw_token(claims_for(sub="bob"))
    for _ in range(3):
        assert verify(token, counting, now_s=NOW).identity == "bob"
    assert asked == [KEY] * 3


def test_the_tokens_remembered_are_bounded() -> None:
    for n in range(tokens.VERIFIED_TOKENS_MAX + 10):
        verify(raw_token(claims_for(sub=f"user-{n}")), lookup, now_s=NOW)
    assert len(tokens._verified) == tokens.VERIFIED_TOKENS_MAX


def test_padding_is_tolerated_and_the_signature_covers_the_bytes_as_sent() -> None:
    header, payload = HS256 + "=" * (-len(HS256) % 4), PAYLOAD + "=" * (-len(PAYLOAD) % 4)
    assert header != HS256 or payload != PAYLOAD  # at least one segment really is padded
    padded = signed(header, payload)
    assert verify(padded, lookup, now_s=NOW).identity == "alice"
    assert_same_as_pyjwt(padded)
    # the same claims, padded after signing: the signature no longer covers what was sent
    signature = signed(HS256, PAYLOAD).rsplit(".", 1)[1]
    with pytest.raises(Unauthenticated, match=f"invalid token signature for API key {KEY}"):
        verify(f"{header}.{payload}.{signature}", lookup, now_s=NOW)


def test_a_non_canonical_spelling_of_the_same_bytes_is_malformed() -> None:
    """Base64 of a length that leaves spare low bits in the last character: setting them spells
    the same bytes differently. One token has one spelling, so that is refused, not accepted."""
    assert len(PAYLOAD) % 4 in (2, 3)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = PAYLOAD[-1]
    odd = PAYLOAD[:-1] + alphabet[alphabet.index(last) | 1]
    assert odd != PAYLOAD and base64.urlsafe_b64decode(odd + "==") == base64.urlsafe_b64decode(
        PAYLOAD + "=="
    )
    with pytest.raises(Unauthenticated, match="malformed token: Invalid payload padding"):
        verify(signed(HS256, odd), lookup, now_s=NOW)


@pytest.mark.parametrize(
    ("token", "message"),
    [
        (f"{GOOD}.{GOOD_SIGNATURE}", "malformed token: Invalid payload padding"),
        (f"{GOOD_HEADER}.{GOOD_PAYLOAD}", "malformed token: Not enough segments"),
        (signed(b64("{alg: HS256}"), PAYLOAD), "malformed token: Invalid header string"),
        (signed(b64('["HS256"]'), PAYLOAD), "malformed token: Invalid header string: must be"),
        (signed(HS256, b64("[]")), "malformed token: Invalid payload string: must be a json"),
        (GOOD.replace(GOOD_SIGNATURE, GOOD_SIGNATURE + "%"), "malformed token: Invalid crypto"),
        (signed(b64('{"alg":"HS256","crit":["exp"]}'), PAYLOAD),
         "malformed token: Unsupported critical extension: exp"),
        (signed(HS256, b64(json.dumps(claims_for(sub=7)))), "invalid token: Subject must be"),
    ],
)
def test_malformed_tokens_say_what_is_wrong(token: str, message: str) -> None:
    with pytest.raises(Unauthenticated, match=message):
        verify(token, lookup, now_s=NOW)


_EDITS = st.tuples(st.integers(min_value=0, max_value=10_000),
                   st.sampled_from(["delete", "insert", "replace"]),
                   st.sampled_from([*"Aa0-_+/.=!é \n", "AA", "=="]))


@settings(max_examples=400, deadline=None)
@given(base=st.sampled_from([GOOD, mint_job_token(job_request(), now_s=NOW),
                             signed(HS256, PAYLOAD + "=" * (-len(PAYLOAD) % 4))]),
       edits=st.lists(_EDITS, min_size=1, max_size=3))
def test_any_damaged_token_gets_pyjwts_verdict(
    base: str, edits: list[tuple[int, str, str]]
) -> None:
    token = base
    for at, kind, text in edits:
        at %= len(token) + 1
        if kind == "delete":
            token = token[:at] + token[at + 1:]
        elif kind == "insert":
            token = token[:at] + text + token[at:]
        else:
            token = token[:at] + text + token[at + len(text):]
    assert_same_as_pyjwt(token)


# -- signing with the standard library, byte for byte what PyJWT made ------------------------------

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=10,
)


@settings(max_examples=200, deadline=None)
@given(claims=st.dictionaries(st.text(), _JSON, max_size=6), secret=st.text(min_size=1))
def test_sign_is_byte_for_byte_pyjwt_encode(claims: dict[str, Any], secret: str) -> None:
    claims.pop("iss", None)
    try:
        expected: object = jwt.encode(claims, secret, algorithm="HS256")
    except jwt.InvalidKeyError as exc:  # a secret that is JSON with "kty", or key-shaped
        with pytest.raises(jwt.InvalidKeyError, match="HMAC secret"):
            tokens.sign(claims, secret)
        expected = exc
    else:
        assert tokens.sign(claims, secret) == expected


def test_sign_matches_pyjwt_on_datetimes_and_refuses_what_it_refused() -> None:
    when = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    claims = {"iss": KEY, "exp": when, "nbf": when, "iat": when, "x": "☎"}
    assert tokens.sign(claims, SECRET) == jwt.encode(claims, SECRET, algorithm="HS256")
    with pytest.raises(TypeError, match=r"Issuer \(iss\) must be a string"):
        tokens.sign({"iss": 7}, SECRET)
    with pytest.raises(jwt.InvalidKeyError, match="HMAC key must not be empty"):
        tokens.sign({"iss": KEY}, "")
    with pytest.raises(jwt.InvalidKeyError, match="should not be used"):
        mint_job_token(job_request(api_secret="ssh-ed25519 AAAA"))


def test_a_job_token_is_byte_for_byte_what_pyjwt_made() -> None:
    token = mint_job_token(job_request(), now_s=NOW)
    payload = jwt.decode(token, SECRET, algorithms=["HS256"], options={"verify_exp": False,
                                                                       "verify_nbf": False})
    assert token == jwt.encode(payload, SECRET, algorithm="HS256")


@pytest.mark.parametrize("bad_exp", [float("nan"), float("inf"), float("-inf")])
def test_a_signed_token_with_a_non_finite_exp_is_refused_not_a_crash(bad_exp: float) -> None:
    """json.dumps writes NaN/Infinity, and Python's json reads them back: a key holder could
    send one; it must be an authentication error, never an uncaught exception."""
    token = tokens.sign({"iss": "APIkey", "exp": bad_exp}, "s" * 32)
    with pytest.raises(Unauthenticated, match="'exp' must be a number"):
        tokens.verify(token, lambda key: "s" * 32)
