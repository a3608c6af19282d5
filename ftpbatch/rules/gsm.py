"""The GSM 03.38 default alphabet and its extension table (3GPP TS 23.038).

The tables are written out by septet value so that the SMPP connector can use
the same data to pack GSM 7-bit text (``GSM_BASIC.index(ch)`` is the septet,
``GSM_EXTENSION[ch]`` the septet that follows an escape). The rules stage only
needs to know which characters exist and what they cost:

* a character of the default alphabet costs 1 septet;
* a character of the extension table costs 2 septets (escape + code), and the
  pair must never be split across two parts of a concatenated message.

Also here: the regular expression that finds non-GSM characters in a text
column, written for RE2, the engine behind ``pyarrow.compute``'s regex
kernels (``\\x{...}`` escapes).
"""

from __future__ import annotations

#: The default alphabet, indexed by septet value. 0x1B is the escape to the
#: extension table, not a character; it is kept as a placeholder so that the
#: index of every other character is its septet value.
GSM_ESCAPE = "\x1b"
GSM_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNO"
    "PQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmno"
    "pqrstuvwxyzäöñüà"
)
assert len(GSM_BASIC) == 128

#: The extension table: character -> septet sent after the escape.
GSM_EXTENSION: dict[str, int] = {
    "\x0c": 0x0A,  # form feed (page break)
    "^": 0x14,
    "{": 0x28,
    "}": 0x29,
    "\\": 0x2F,
    "[": 0x3C,
    "~": 0x3D,
    "]": 0x3E,
    "|": 0x40,
    "€": 0x65,
}

#: Every character that can be sent in GSM 7-bit, and what it costs.
BASIC_CHARS = frozenset(GSM_BASIC) - {GSM_ESCAPE}
EXTENSION_CHARS = frozenset(GSM_EXTENSION)
GSM_CHARS = BASIC_CHARS | EXTENSION_CHARS


def septets(ch: str) -> int:
    """Septets one character costs in GSM 7-bit; 0 if it is not GSM."""
    if ch in BASIC_CHARS:
        return 1
    if ch in EXTENSION_CHARS:
        return 2
    return 0


def is_gsm(text: str) -> bool:
    """True when every character of ``text`` fits GSM 7-bit."""
    return GSM_CHARS.issuperset(text)


# --- RE2 character classes -------------------------------------------------
def _re2_class(chars: frozenset[str], negate: bool = False) -> str:
    """An RE2 bracket expression matching ``chars`` (or everything else).

    Control characters and anything outside printable ASCII are written as
    ``\\x{HHHH}`` so the pattern is readable in logs and independent of how the
    source file is encoded; the few ASCII characters that are special inside a
    bracket are escaped.
    """
    parts = []
    for ch in sorted(chars):
        code = ord(ch)
        if code < 0x20 or code > 0x7E:
            parts.append(f"\\x{{{code:X}}}")
        elif ch in "\\]^-[":
            parts.append("\\" + ch)
        else:
            parts.append(ch)
    return "[" + ("^" if negate else "") + "".join(parts) + "]"


#: Matches any character that is not GSM 7-bit (default or extension).
NON_GSM_RE = _re2_class(GSM_CHARS, negate=True)


def is_forbidden(ch: str) -> bool:
    """True for a character that makes a text unsendable (error 116).

    These are C0 control characters other than tab, line feed, form feed and
    carriage return; DEL; the C1 controls U+0080..U+009F (in practice they are
    the trace of a Windows-1252 file read as Latin-1); and lone UTF-16
    surrogates (not characters at all; they cannot even be stored as UTF-8).
    NUL in particular truncates the text at many SMSCs. Tab is allowed: it is
    not in the GSM alphabet, so it makes the message UCS-2, but phones show it.
    """
    code = ord(ch)
    return (
        code < 0x09
        or code in (0x0B,)
        or 0x0E <= code <= 0x1F
        or 0x7F <= code <= 0x9F
        or 0xD800 <= code <= 0xDFFF
    )
