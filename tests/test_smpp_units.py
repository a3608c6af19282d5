"""The SMPP connector's pure parts: URL options, encodings, receipts, status map."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ftpbatch.dispatch.smpp.fields import relative_time as _relative_time, source_address as _source_address
from ftpbatch.dispatch.smpp.encoding import (
    DCS_GSM,
    DCS_UCS2,
    ESM_UDHI,
    TLV_SAR_MSG_REF_NUM,
    TLV_SAR_SEGMENT_SEQNUM,
    TLV_SAR_TOTAL_SEGMENTS,
    EncodingError,
    build_parts,
    gsm_septets,
    pack_septets,
    unpack_septets,
)
from ftpbatch.dispatch.smpp.receipts import (
    TLV_MESSAGE_STATE,
    TLV_RECEIPTED_MESSAGE_ID,
    is_receipt,
    normalise_submit_id,
    parse_receipt,
)
from ftpbatch.dispatch.smpp.settings import SmppSettings, parse_url
from ftpbatch.dispatch.smpp.status import Action, status_from_error, submit_outcome
from ftpbatch.errors import ConfigError
from ftpbatch.rules.gsm import GSM_BASIC, GSM_ESCAPE, GSM_EXTENSION
from ftpbatch.rules.segments import split_parts


# ----------------------------------------------------------------- settings
def test_url_defaults() -> None:
    s = parse_url("smpp://acme:s3cret@smsc.example.net")
    assert (s.system_id, s.password, s.host, s.port) == ("acme", "s3cret", "smsc.example.net", 2775)
    assert (s.bind, s.window, s.tps, s.gsm_packed, s.sar, s.receipt_id) == ("trx", 10, None, False, False, "as-is")
    assert (s.source_ton, s.source_npi, s.dest_ton, s.dest_npi) == (None, None, 1, 1)
    assert s.account == "smpp:acme@smsc.example.net:2775"


def test_url_every_option() -> None:
    s = parse_url(
        "smpp://acme:p%40ss@10.0.0.1:2776?bind=tx+rx&window=50&tps=250&system_type=VMA&service_type=CMT"
        "&source_ton=1&source_npi=1&dest_ton=2&dest_npi=8&gsm_packed=1&sar=1&receipt_id=dec"
        "&receipt_timeout=3600&enquire_link=15&response_timeout=5&reconnect_min=0.5&reconnect_max=30"
        "&throttle_min=0.1&throttle_max=5&retry_max=3&connect_timeout=4"
    )
    assert s == SmppSettings(
        host="10.0.0.1", port=2776, system_id="acme", password="p@ss", bind="tx+rx", system_type="VMA",
        service_type="CMT", window=50, tps=250.0, source_ton=1, source_npi=1, dest_ton=2, dest_npi=8,
        gsm_packed=True, sar=True, receipt_id="dec", receipt_timeout=3600.0, enquire_link=15.0,
        response_timeout=5.0, connect_timeout=4.0, reconnect_min=0.5, reconnect_max=30.0, throttle_min=0.1,
        throttle_max=5.0, retry_max=3,
    )


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("http://a:b@h:1", "smpp://"),
        ("smpp://a:b@h:1?windw=5", "unknown SMPP connector option 'windw'"),
        ("smpp://a:b@h:1?window=zero", "window='zero' is not a number"),
        ("smpp://a:b@h:1?window=0", "window=0 must be between 1 and 1000"),
        ("smpp://a:b@h:1?bind=rx", "bind='rx' must be one of trx, tx+rx"),
        ("smpp://a:b@h:1?gsm_packed=maybe", "must be 0 or 1"),
        ("smpp://a:b@h:1?receipt_id=octal", "receipt_id='octal'"),
        ("smpp://a:b@h:1?response_timeout=-1", "response_timeout=-1.0 must be positive"),
        ("smpp://a:b@h:1?dest_ton=300", "dest_ton=300 must be between 0 and 255"),
        ("smpp://a:b@h:99999", "bad port"),
        ("smpp://averyveryverylongsystemid:b@h:1", "at most 15"),
    ],
)
def test_url_errors_name_the_problem(url: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_url(url)
    assert words in str(info.value)


# ----------------------------------------------------------------- encoding
def test_gsm_table_matches_an_independent_codec() -> None:
    gsm0338 = pytest.importorskip("gsm0338")
    del gsm0338
    for ch in [c for c in GSM_BASIC if c != GSM_ESCAPE] + list(GSM_EXTENSION):
        assert bytes(gsm_septets(ch)) == ch.encode("gsm03.38"), repr(ch)


def test_pack_known_vector() -> None:
    # The classic example of GSM 03.38 packing.
    assert pack_septets(gsm_septets("hellohello")).hex().upper() == "E8329BFD4697D9EC37"


def test_pack_adds_cr_instead_of_seven_spare_bits() -> None:
    seven = pack_septets(gsm_septets("1234567"))  # 49 bits -> 7 spare bits in the 7th octet
    assert len(seven) == 7
    assert unpack_septets(seven, 8)[-1] == 0x0D


@given(st.lists(st.integers(0, 127), max_size=200), st.integers(0, 6))
def test_pack_round_trip(septets: list[int], fill: int) -> None:
    packed = pack_septets(septets, fill)
    assert unpack_septets(packed, len(septets), fill) == septets
    assert len(packed) <= (len(septets) * 7 + fill + 7 + 7) // 8


def test_single_gsm_part() -> None:
    [part] = build_parts("Hi € [x]", "gsm7", split=split_parts, reference=1)
    assert part.data_coding == DCS_GSM and part.esm_class == 0 and part.tlvs == ()
    assert part.short_message == bytes([0x48, 0x69, 0x20, 0x1B, 0x65, 0x20, 0x1B, 0x3C, 0x78, 0x1B, 0x3E])


def test_udh_parts_share_reference() -> None:
    text = "x" * 200 + "€"
    parts = build_parts(text, "gsm7", split=split_parts, reference=0x1234, packed=False)
    assert len(parts) == 2
    for seq, part in enumerate(parts, start=1):
        assert part.esm_class == ESM_UDHI
        assert part.short_message[:6] == bytes([5, 0, 3, 0x34, 2, seq])
    assert len(parts[0].short_message) == 6 + 153


def test_packed_udh_parts_fit_140_octets() -> None:
    parts = build_parts("y" * 400, "gsm7", split=split_parts, reference=7, packed=True)
    assert [len(p.short_message) for p in parts] == [140, 140, 6 + (94 * 7 + 1 + 7) // 8]
    assert unpack_septets(parts[0].short_message[6:], 153, 1) == [ord("y")] * 153


def test_ucs2_parts_keep_surrogate_pairs() -> None:
    text = "ж" * 66 + "😀" + "ж" * 10
    parts = build_parts(text, "ucs2", split=split_parts, reference=3)
    assert [p.data_coding for p in parts] == [DCS_UCS2, DCS_UCS2]
    bodies = [p.short_message[6:] for p in parts]
    assert len(bodies[0]) == 66 * 2  # the pair did not fit: it opens part 2
    assert "".join(b.decode("utf-16-be") for b in bodies) == text


def test_sar_parts() -> None:
    parts = build_parts("z" * 300, "gsm7", split=split_parts, reference=0x1FFFF, sar=True)
    assert len(parts) == 2
    for seq, part in enumerate(parts, start=1):
        assert part.esm_class == 0
        assert dict(part.tlvs) == {TLV_SAR_MSG_REF_NUM: b"\xff\xff", TLV_SAR_TOTAL_SEGMENTS: b"\x02",
                                   TLV_SAR_SEGMENT_SEQNUM: bytes([seq])}


def test_text_outside_its_encoding_is_an_error() -> None:
    with pytest.raises(EncodingError, match="U\\+0416"):
        build_parts("Ж", "gsm7", split=split_parts, reference=1)
    with pytest.raises(EncodingError, match="unknown encoding"):
        build_parts("x", "latin1", split=split_parts, reference=1)


# ----------------------------------------------------------------- receipts
RECEIPT = b"id:0A1B2C sub:001 dlvrd:001 submit date:2401011200 done date:2401011201 stat:DELIVRD err:000 text:Hello"


def test_receipt_text_fields_any_case() -> None:
    parsed = parse_receipt(b"ID:77 sub:001 dlvrd:000 submit date:2401011200 done date:2401011201 Stat:undeliv Err:042", {})
    assert parsed is not None
    assert (parsed.upstream_id, parsed.stat, parsed.status, parsed.err) == ("77", "UNDELIV", "007", "042")
    # "submit date:" must not be read as the id, nor "text:" fields
    parsed = parse_receipt(b"sub:001 submit date:2401011200 stat:DELIVRD id:9 text:id:1 stat:UNDELIV", {})
    assert parsed is not None and parsed.upstream_id == "9"


def test_receipt_from_text_only() -> None:
    parsed = parse_receipt(RECEIPT, {})
    assert parsed is not None
    assert (parsed.upstream_id, parsed.status, parsed.source) == ("0A1B2C", "004", "text")


def test_receipt_tlvs_win_over_text() -> None:
    tlvs = {TLV_RECEIPTED_MESSAGE_ID: b"XYZ\x00", TLV_MESSAGE_STATE: bytes([5])}
    parsed = parse_receipt(RECEIPT, tlvs)
    assert parsed is not None and (parsed.upstream_id, parsed.stat, parsed.status) == ("XYZ", "UNDELIV", "007")


@pytest.mark.parametrize(("stat", "code"), [("DELIVRD", "004"), ("UNDELIV", "007"), ("REJECTD", "007"),
                                           ("EXPIRED", "010"), ("DELETED", "005"), ("UNKNOWN", "005"),
                                           ("ACCEPTD", "005"), ("WEIRD", "005"), ("ENROUTE", None)])
def test_stat_map(stat: str, code: str | None) -> None:
    parsed = parse_receipt(f"id:1 stat:{stat} err:001".encode(), {})
    assert parsed is not None and parsed.status == code


def test_receipt_without_id_or_status_is_none() -> None:
    assert parse_receipt(b"stat:DELIVRD", {}) is None
    assert parse_receipt(b"id:123 sub:001", {}) is None
    assert parse_receipt(b"", {TLV_RECEIPTED_MESSAGE_ID: b"\x00"}) is None


def test_receipt_id_rules() -> None:
    # dec: hex submit ids, decimal text ids; everything becomes lower-case hex
    assert normalise_submit_id("00A1B2", "dec") == "a1b2"
    assert parse_receipt(b"id:41394 stat:DELIVRD", {}, "dec").upstream_id == "a1b2"  # type: ignore[union-attr]
    tlv = {TLV_RECEIPTED_MESSAGE_ID: b"A1B2\x00"}
    assert parse_receipt(b"id:41394 stat:DELIVRD", tlv, "dec").upstream_id == "a1b2"  # type: ignore[union-attr]
    # hex: decimal submit ids, hex text ids; everything becomes decimal
    assert normalise_submit_id("0041394", "hex") == "41394"
    assert parse_receipt(b"id:a1b2 stat:DELIVRD", {}, "hex").upstream_id == "41394"  # type: ignore[union-attr]
    # as-is: untouched; and an id that does not parse under its rule is kept
    assert normalise_submit_id("00A1B2", "as-is") == "00A1B2"
    assert normalise_submit_id("msg-7", "dec") == "msg-7"


def test_is_receipt() -> None:
    assert is_receipt(0x04, set()) and is_receipt(0x20, set())
    assert is_receipt(0x00, {TLV_RECEIPTED_MESSAGE_ID})
    assert not is_receipt(0x00, set()) and not is_receipt(0x40, set())


# ------------------------------------------------------------------- status
@pytest.mark.parametrize(
    ("status", "action", "code"),
    [(0x00, Action.OK, None), (0x58, Action.THROTTLE, None), (0x14, Action.THROTTLE, None),
     (0x08, Action.RETRY, None), (0x64, Action.RETRY, None), (0x04, Action.REBIND, None),
     (0x0B, Action.FAIL, "105"), (0x50, Action.FAIL, "105"), (0x51, Action.FAIL, "105"),
     (0x0A, Action.FAIL, "123"), (0x48, Action.FAIL, "123"), (0x49, Action.FAIL, "123"),
     (0x65, Action.FAIL, "009"), (0x66, Action.FAIL, "009"), (0x401, Action.FAIL, "009"),
     (0x45, Action.FAIL, "005"), (0x01, Action.FAIL, "005"), (0xFF, Action.FAIL, "005")],
)
def test_command_status_map(status: int, action: Action, code: str | None) -> None:
    outcome = submit_outcome(status)
    assert (outcome.action, outcome.code) == (action, code)
    if status:
        assert f"0x{status:08X}" in outcome.text


def test_status_from_smpp34_error_text() -> None:
    assert status_from_error("ESME_RSYSERR (0x00000008)") == 0x08
    assert status_from_error("ESME_RTHROTTLED") == 0x58
    assert status_from_error("bind timed out") is None


# ------------------------------------------------------------------- fields
def test_relative_validity() -> None:
    assert _relative_time(90) == "000000013000000R"
    assert _relative_time(3 * 1440 + 5) == "000003000500000R"
    assert _relative_time(10**9) == "000099235900000R"


def test_source_address_defaults_and_overrides() -> None:
    s = parse_url("smpp://a:b@h")
    assert _source_address("MyShop", s) == ("MyShop", 5, 0)
    assert _source_address("+447700900123", s) == ("447700900123", 1, 1)
    assert _source_address(None, s) == ("", 0, 0)
    assert _source_address("MyShop", parse_url("smpp://a:b@h?source_ton=3&source_npi=9")) == ("MyShop", 3, 9)


def test_a_receipt_timeout_in_the_connector_url_wins_over_the_setting(tmp_path) -> None:
    from ftpbatch.config import load_settings
    from ftpbatch.service import Gateway

    for url, expected in (("smpp://esme:pw@127.0.0.1:1?receipt_timeout=7", 7.0), ("smpp://esme:pw@127.0.0.1:1", 123.0)):
        settings = load_settings(tmp_path, {"dispatch": {"connector": url, "receipt_timeout": 123.0}})
        gateway = Gateway(settings, ftp=False, watch_inboxes=False)
        try:
            assert gateway.ledger.receipt_timeout == expected, url
        finally:
            gateway.ledger.close()
            gateway.reporter.process.close()


# ------------------------------------------------------------ submit_sm templates
_FIELD_SETS = st.fixed_dictionaries({
    "source_addr_ton": st.integers(0, 6), "source_addr_npi": st.sampled_from([0, 1, 9]),
    "dest_addr_ton": st.integers(0, 6), "dest_addr_npi": st.sampled_from([0, 1]),
    "service_type": st.sampled_from(["", "CMT", "WAP"]), "esm_class": st.sampled_from([0, 0x40]),
    "data_coding": st.sampled_from([0, 8]), "registered_delivery": st.integers(0, 1),
}, optional={"validity_period": st.sampled_from(["000000013000000R", "000003000500000R"])})


@given(fields=_FIELD_SETS, source=st.sampled_from(["", "MyShop", "447700900123"]),
       destination=st.text(max_size=24), text=st.binary(max_size=260))
def test_a_submit_sm_template_writes_smpp34_s_bytes_or_leaves_the_message_to_it(fields, source, destination, text) -> None:
    """The template is the codec's PDU with the destination and text put in, for any of them it takes;
    those it does not take (a text over 254 octets, a NUL in the address) are smpp34's to encode or refuse."""
    from ftpbatch.dispatch.smpp import pdu

    template = pdu.SubmitTemplate.of(source, fields)
    assert template is not None
    made = template.submit_sm(0x1234, destination, text)
    if len(text) > 254 or "\0" in destination:
        assert made is None
    else:
        assert made == pdu.submit_sm(0x1234, source, destination, text, fields)


@pytest.mark.parametrize("text, encoding", [
    ("Hello from the unit test", "gsm7"), ("Grüße {€} " * 30, "gsm7"), ("Привет", "ucs2"), ("Ω😀" * 60, "ucs2"),
])
@pytest.mark.parametrize("options", ["", "?sar=1", "?gsm_packed=1", "?source_ton=3&service_type=CMT"])
def test_a_connector_s_pdus_are_the_same_with_and_without_templates(text: str, encoding: str, options: str,
                                                                   monkeypatch) -> None:
    from ftpbatch.dispatch.smpp import pdu
    from ftpbatch.dispatch.smpp.connector import SmppConnector
    from ftpbatch.models import OutboundMessage

    messages = [OutboundMessage(n, 1, "p", f"44770090{n:04d}", sender, text, encoding, 1, validity, None)
                for n, (sender, validity) in enumerate([(None, None), ("MyShop", None), ("+447700900999", 90)])]
    with_templates = SmppConnector.from_url(f"smpp://a:b@127.0.0.1:1{options}")
    with_templates._refs = iter(range(10, 100))  # the same concatenation references on both
    made = [with_templates._make_job(m) for m in messages]
    if "sar" not in options or len(made[0].parts) == 1:  # SAR parts carry TLVs: smpp34 encodes those
        assert with_templates._templates and all(with_templates._templates.values())  # the templates were used
    monkeypatch.setattr(pdu.SubmitTemplate, "of", classmethod(lambda cls, source, fields: None))
    without = SmppConnector.from_url(f"smpp://a:b@127.0.0.1:1{options}")
    without._refs = iter(range(10, 100))
    assert [[p.pdu for p in job.parts] for job in made] == [[p.pdu for p in without._make_job(m).parts] for m in messages]
