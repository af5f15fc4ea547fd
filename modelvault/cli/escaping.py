"""The one escaping of user data for people: ``printable``.

File names, tags, notes and paths are the user's and may hold anything: an
escape sequence that moves the cursor or recolours the terminal, a line break
that forges a line of output, a bidirectional override that shows text
reversed, half an emoji that no encoder takes, the undecodable bytes of a file
name (``os.fsdecode``'s surrogates). Everything the command line prints and the
scan report keeps as text goes through ``printable``. This module imports
nothing but ``re``, so the library (the scan report) may use it without rich.
"""

from __future__ import annotations

import re

# C0 and C1 controls and DEL (escape sequences start with ESC or CSI), every
# surrogate, the line and paragraph separators, and the bidirectional overrides
# and isolates that reorder what follows them on screen. Joiners and other
# spaces stay: an emoji family or a name in Japanese must look like itself.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: str) -> str:
    """``text`` as it may be shown: what would act on the terminal instead of
    being seen as a backslash escape (``\\x1b``, ``\\n``, ``\\u202e``, ``\\ud83d``;
    an undecodable byte of a file name as ``\\xNN``); everything else, backslashes,
    accents, CJK and emoji included, as it is."""
    return _UNPRINTABLE.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    char = match[0]
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # a byte os.fsdecode could not decode
        return f"\\x{code - 0xDC00:02x}"
    return _NAMED.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
