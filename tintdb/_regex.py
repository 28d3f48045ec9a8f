"""``$regex`` patterns: Chroma's dialect (Rust's ``regex`` crate), run by RE2 in linear time.

A backtracking engine (Python's ``re``) can take exponential time on patterns such as
``(a+)+$``, and it runs inside SQLite holding the GIL, so one request could stall every
other. RE2 (PyPI ``google-re2``) matches in time linear in the document and releases the
GIL while it does. Its syntax is close to Rust's but not equal: Rust's ``\\d``, ``\\s``,
``\\w`` are Unicode-aware, its ``$`` never matches before a final newline in the way
Python's does, and it has class set operations (``[a-z--aeiou]``) RE2 lacks.

So a pattern is parsed here as Rust's regex syntax and written out again as an RE2
pattern in which every piece carries its own meaning (no global flags): ``\\d`` becomes
``\\p{Nd}``, ``(?i)`` is applied per literal or class, and so on. A construct whose RE2
form would match differently from Chroma's is refused with ``InvalidArgumentError``
rather than run approximately: Unicode word boundaries (``\\b`` outside ``(?-u:...)``),
look-around and backreferences (refused by Chroma too), the CRLF flag ``R``, and a few
rare class forms. The full list is in docs/regex.md.

Over 500 lines because ``_Parser`` is one recursive descent over one grammar (Rust's
regex syntax, written out as RE2 as it goes), and splitting a grammar's productions
across modules hides how they recurse. What would split off cleanly: the Unicode
tables at the top (categories, scripts, POSIX classes) and ``required_literal`` (the
trigram prefilter's literal), which only read patterns.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from .errors import InvalidArgumentError

__all__ = ["MAX_REPEAT", "check", "compile_pattern", "search", "translate"]

# RE2's largest counted repetition; Rust's limit is on compiled size instead.
MAX_REPEAT = 1000
# Compiled-program memory for one pattern (RE2's default is 8 MiB).
_MAX_MEM = 32 << 20
_MAX_CODE_POINT = 0x10FFFF

_WHITESPACE = (
    (0x09, 0x0D),
    (0x20, 0x20),
    (0x85, 0x85),
    (0xA0, 0xA0),
    (0x1680, 0x1680),
    (0x2000, 0x200A),
    (0x2028, 0x2029),
    (0x202F, 0x202F),
    (0x205F, 0x205F),
    (0x3000, 0x3000),
)
# Rust's Unicode ``\w``: Alphabetic, marks, decimal digits, connector punctuation and
# Join_Control. Alphabetic is letters, letter numbers and Other_Alphabetic, whose members
# outside the marks are the circled and squared Latin letters listed here.
_WORD_PROPS = ("\\p{L}", "\\p{Nl}", "\\p{M}", "\\p{Nd}", "\\p{Pc}")
_WORD_RANGES = (
    (0x200C, 0x200D),
    (0x24B6, 0x24E9),
    (0x1F130, 0x1F149),
    (0x1F150, 0x1F169),
    (0x1F170, 0x1F189),
)
_POSIX = {
    "alnum": ((0x30, 0x39), (0x41, 0x5A), (0x61, 0x7A)),
    "alpha": ((0x41, 0x5A), (0x61, 0x7A)),
    "ascii": ((0x00, 0x7F),),
    "blank": ((0x09, 0x09), (0x20, 0x20)),
    "cntrl": ((0x00, 0x1F), (0x7F, 0x7F)),
    "digit": ((0x30, 0x39),),
    "graph": ((0x21, 0x7E),),
    "lower": ((0x61, 0x7A),),
    "print": ((0x20, 0x7E),),
    "punct": ((0x21, 0x2F), (0x3A, 0x40), (0x5B, 0x60), (0x7B, 0x7E)),
    "space": ((0x09, 0x0D), (0x20, 0x20)),
    "upper": ((0x41, 0x5A),),
    "word": ((0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)),
    "xdigit": ((0x30, 0x39), (0x41, 0x46), (0x61, 0x66)),
}
# General categories by short and long name. ``C`` and ``Cn`` are left out: RE2 has no
# table of unassigned code points, which Rust counts in both.
_CATEGORIES = {
    "L": "Letter",
    "Lu": "Uppercase_Letter",
    "Ll": "Lowercase_Letter",
    "Lt": "Titlecase_Letter",
    "Lm": "Modifier_Letter",
    "Lo": "Other_Letter",
    "M": "Mark",
    "Mc": "Spacing_Mark",
    "Me": "Enclosing_Mark",
    "Mn": "Nonspacing_Mark",
    "N": "Number",
    "Nd": "Decimal_Number",
    "Nl": "Letter_Number",
    "No": "Other_Number",
    "P": "Punctuation",
    "Pc": "Connector_Punctuation",
    "Pd": "Dash_Punctuation",
    "Pe": "Close_Punctuation",
    "Pf": "Final_Punctuation",
    "Pi": "Initial_Punctuation",
    "Po": "Other_Punctuation",
    "Ps": "Open_Punctuation",
    "S": "Symbol",
    "Sc": "Currency_Symbol",
    "Sk": "Modifier_Symbol",
    "Sm": "Math_Symbol",
    "So": "Other_Symbol",
    "Z": "Separator",
    "Zl": "Line_Separator",
    "Zp": "Paragraph_Separator",
    "Zs": "Space_Separator",
    "Cc": "Control",
    "Cf": "Format",
    "Co": "Private_Use",
    "Cs": "Surrogate",
}
# Scripts RE2 knows (Unicode 15.1), by their long names.
_SCRIPT_NAMES = """Adlam Ahom Anatolian_Hieroglyphs Arabic Armenian Avestan Balinese Bamum Bassa_Vah
Batak Bengali Bhaiksuki Bopomofo Brahmi Braille Buginese Buhid Canadian_Aboriginal Carian
Caucasian_Albanian Chakma Cham Cherokee Chorasmian Common Coptic Cuneiform Cypriot
Cypro_Minoan Cyrillic Deseret Devanagari Dives_Akuru Dogra Duployan Egyptian_Hieroglyphs
Elbasan Elymaic Ethiopic Georgian Glagolitic Gothic Grantha Greek Gujarati Gunjala_Gondi
Gurmukhi Han Hangul Hanifi_Rohingya Hanunoo Hatran Hebrew Hiragana Imperial_Aramaic Inherited
Inscriptional_Pahlavi Inscriptional_Parthian Javanese Kaithi Kannada Katakana Kawi Kayah_Li
Kharoshthi Khitan_Small_Script Khmer Khojki Khudawadi Lao Latin Lepcha Limbu Linear_A Linear_B
Lisu Lycian Lydian Mahajani Makasar Malayalam Mandaic Manichaean Marchen Masaram_Gondi
Medefaidrin Meetei_Mayek Mende_Kikakui Meroitic_Cursive Meroitic_Hieroglyphs Miao Modi
Mongolian Mro Multani Myanmar Nabataean Nag_Mundari Nandinagari New_Tai_Lue Newa Nko Nushu
Nyiakeng_Puachue_Hmong Ogham Ol_Chiki Old_Hungarian Old_Italic Old_North_Arabian Old_Permic
Old_Persian Old_Sogdian Old_South_Arabian Old_Turkic Old_Uyghur Oriya Osage Osmanya
Pahawh_Hmong Palmyrene Pau_Cin_Hau Phags_Pa Phoenician Psalter_Pahlavi Rejang Runic Samaritan
Saurashtra Sharada Shavian Siddham SignWriting Sinhala Sogdian Sora_Sompeng Soyombo Sundanese
Syloti_Nagri Syriac Tagalog Tagbanwa Tai_Le Tai_Tham Tai_Viet Takri Tamil Tangsa Tangut Telugu
Thaana Thai Tibetan Tifinagh Tirhuta Toto Ugaritic Vai Vithkuqi Wancho Warang_Citi Yezidi
Zanabazar_Square"""
_SCRIPTS = _SCRIPT_NAMES.split()


def _loose(name: str) -> str:
    """Unicode's loose matching of property names: no case, spaces, '_' or '-'."""
    return "".join(c for c in name.lower() if c not in " \t\n\r\f\v_-")


_BY_LOOSE_CATEGORY = {_loose(k): k for k in _CATEGORIES} | {
    _loose(v): k for k, v in _CATEGORIES.items()
}
_BY_LOOSE_SCRIPT = {_loose(s): s for s in _SCRIPTS}


class _Refused(Exception):
    """A pattern Chroma would refuse, or one whose RE2 form would match differently."""


@dataclass(frozen=True)
class _Flags:
    i: bool = False  # case-insensitive
    m: bool = False  # ^ and $ at line ends
    s: bool = False  # . matches \n
    U: bool = False  # swap greedy and lazy
    x: bool = False  # ignore whitespace, # comments
    u: bool = True  # Unicode-aware classes and boundaries


@dataclass
class _Set:
    """A character class: the union of ``ranges`` and RE2 property items (``\\p{Lu}``),
    complemented when ``negated``."""

    ranges: list[tuple[int, int]]
    props: list[str]
    negated: bool = False

    def concrete(self) -> bool:
        return not self.props


def _normalize(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(hi, out[-1][1]))
        else:
            out.append((lo, hi))
    return out


def _complement(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out, start = [], 0
    for lo, hi in _normalize(ranges):
        if lo > start:
            out.append((start, lo - 1))
        start = hi + 1
    if start <= _MAX_CODE_POINT:
        out.append((start, _MAX_CODE_POINT))
    return out


def _intersect(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> list[tuple[int, int]]:
    return _complement(_complement(a) + _complement(b))


def _escape(cp: int) -> str:
    c = chr(cp)
    return c if c.isascii() and c.isalnum() else f"\\x{{{cp:X}}}"


def _class_body(ranges: list[tuple[int, int]]) -> str:
    return "".join(_escape(lo) if lo == hi else f"{_escape(lo)}-{_escape(hi)}" for lo, hi in ranges)


class _Parser:
    """Recursive descent over Rust's regex syntax, writing RE2 syntax as it goes."""

    def __init__(self, pattern: str) -> None:
        self.p = pattern
        self.pos = 0
        self.names: set[str] = set()

    # ------------------------------------------------------------ plumbing

    def error(self, message: str) -> _Refused:
        return _Refused(f"{message} (at position {self.pos})")

    def peek(self, k: int = 0) -> str:
        i = self.pos + k
        return self.p[i] if i < len(self.p) else ""

    def eof(self) -> bool:
        return self.pos >= len(self.p)

    def skip_space(self, flags: _Flags) -> None:
        """In ``x`` mode whitespace and ``#`` comments between tokens mean nothing."""
        if not flags.x:
            return
        while not self.eof():
            c = self.peek()
            if c.isspace():
                self.pos += 1
            elif c == "#":
                while not self.eof() and self.peek() != "\n":
                    self.pos += 1
            else:
                return

    # ------------------------------------------------------------ structure

    def parse(self) -> str:
        out, _ = self.alternation(_Flags(), top=True)
        if not self.eof():
            raise self.error("unopened group: ')' without '('")
        return out

    def alternation(self, flags: _Flags, top: bool) -> tuple[str, _Flags]:
        branches = []
        while True:
            text, flags = self.concat(flags)
            branches.append(text)
            if self.peek() == "|":
                self.pos += 1
                continue
            if self.peek() == ")":
                if top:
                    raise self.error("unopened group: ')' without '('")
                return "|".join(branches), flags
            if self.eof():
                if not top:
                    raise self.error("unclosed group")
                return "|".join(branches), flags

    def concat(self, flags: _Flags) -> tuple[str, _Flags]:
        parts: list[str] = []
        last: str | None = None  # the atom a quantifier would apply to
        while True:
            self.skip_space(flags)
            c = self.peek()
            if c in ("", "|", ")"):
                if last is not None:
                    parts.append(last)
                return "".join(parts), flags
            if c in "*+?{":
                if last is None:
                    raise self.error("repetition operator missing expression")
                last = self.quantified(last, flags)
                continue
            if last is not None:
                parts.append(last)
                last = None
            if c == "(":
                atom, new_flags = self.group(flags)
                if atom is None:  # (?flags) sets flags for the rest of this group
                    flags = new_flags
                    continue
                last = atom
            else:
                last = self.atom(flags)

    def quantified(self, atom: str, flags: _Flags) -> str:
        c = self.peek()
        self.pos += 1
        if c == "{":
            lo, hi = self.counts(flags)
            op = f"{{{lo}}}" if lo == hi else f"{{{lo},{'' if hi is None else hi}}}"
        else:
            op = c
        lazy = False
        if self.peek() == "?":
            self.pos += 1
            lazy = True
        if lazy != flags.U:
            op += "?"
        return f"(?:{atom}){op}"

    def number(self, flags: _Flags) -> int | None:
        self.skip_space_always()
        start = self.pos
        while self.peek().isascii() and self.peek().isdigit():
            self.pos += 1
        if start == self.pos:
            return None
        value = int(self.p[start : self.pos])
        if value > MAX_REPEAT:
            raise self.error(f"repetition count {value} is over the limit of {MAX_REPEAT}")
        self.skip_space_always()
        return value

    def skip_space_always(self) -> None:
        while self.peek() != "" and self.peek().isspace():
            self.pos += 1

    def counts(self, flags: _Flags) -> tuple[int, int | None]:
        lo = self.number(flags)
        if lo is None:
            raise self.error("repetition quantifier expects a valid decimal")
        hi: int | None = lo
        if self.peek() == ",":
            self.pos += 1
            hi = self.number(flags)
        if self.peek() != "}":
            raise self.error("unclosed counted repetition")
        self.pos += 1
        if hi is not None and hi < lo:
            raise self.error("invalid repetition count range, the start must be <= the end")
        return lo, hi

    def group(self, flags: _Flags) -> tuple[str | None, _Flags]:
        self.pos += 1  # (
        if self.peek() != "?":
            return self.group_body(flags), flags
        self.pos += 1
        c = self.peek()
        if c in ("=", "!") or (c == "<" and self.peek(1) in ("=", "!")):
            raise self.error("look-around (look-ahead and look-behind) is not supported")
        if c == "P" and self.peek(1) == "<":
            self.pos += 2
            self.capture_name()
            return self.group_body(flags), flags
        if c == "<":
            self.pos += 1
            self.capture_name()
            return self.group_body(flags), flags
        new = self.flag_list(flags)
        if self.peek() == ")":
            self.pos += 1
            return None, new
        self.pos += 1  # ':' (checked by flag_list)
        return self.group_body(new), flags

    def group_body(self, flags: _Flags) -> str:
        body, _ = self.alternation(flags, top=False)
        self.pos += 1  # )
        return f"(?:{body})"

    def capture_name(self) -> None:
        start = self.pos
        while self.peek() not in (">", ""):
            c = self.peek()
            first = self.pos == start
            if not (c == "_" or c.isalpha() or (not first and (c.isdigit() or c in ".[]"))):
                raise self.error("invalid capture group character")
            self.pos += 1
        if self.eof():
            raise self.error("unclosed capture group name")
        name = self.p[start : self.pos]
        if not name:
            raise self.error("empty capture group name")
        if name in self.names:
            raise self.error("duplicate capture group name")
        self.names.add(name)
        self.pos += 1  # >

    def flag_list(self, flags: _Flags) -> _Flags:
        seen: set[str] = set()
        negate = False
        dangling = False
        while True:
            c = self.peek()
            if c in (")", ":"):
                if dangling:
                    raise self.error("dangling flag negation operator")
                if not seen and not negate and c == ")":
                    raise self.error("repetition operator missing expression")
                return flags
            if c == "-":
                if negate:
                    raise self.error("repeated flag negation")
                negate = dangling = True
                self.pos += 1
                continue
            if not c or c not in "imsUxuR":  # "" (the end) is in every string
                raise self.error(f"unrecognized flag {c!r}" if c else "unclosed group")
            if c in seen:
                raise self.error("duplicate flag")
            if c == "R":
                raise self.error("the CRLF flag R is not supported")
            seen.add(c)
            dangling = False
            flags = replace(flags, **{c: not negate})
            self.pos += 1

    # ------------------------------------------------------------ atoms

    def atom(self, flags: _Flags) -> str:
        c = self.peek()
        if c == "[":
            return self.class_(flags)
        self.pos += 1
        if c == ".":
            if not flags.u:
                raise self.error("'.' with the u flag off can match invalid UTF-8")
            return "(?s:.)" if flags.s else "[^\\n]"
        if c == "^":
            return "(?m:^)" if flags.m else "\\A"
        if c == "$":
            return "(?m:$)" if flags.m else "\\z"
        if c == "\\":
            return self.escape(flags)
        return self.literal(ord(c), flags)

    def literal(self, cp: int, flags: _Flags) -> str:
        if flags.i:
            if not flags.u:
                raise self.error("case-insensitive matching with the u flag off")
            return f"(?i:{_escape(cp)})"
        return _escape(cp)

    def escape(self, flags: _Flags) -> str:
        """After a backslash, outside a class."""
        c = self.peek()
        if c in ("b", "B"):
            self.pos += 1
            if self.peek() == "{":
                raise self.error(f"\\{c}{{...}} word boundaries are not supported")
            if c == "B":  # RE2 would also find one inside a multi-byte character
                raise self.error("\\B (not a word boundary) is not supported")
            if flags.u:
                raise self.error(
                    "\\b (a Unicode word boundary) is not supported; "
                    "(?-u:\\b) is the ASCII word boundary"
                )
            return "\\b"
        if c == "A":
            self.pos += 1
            return "\\A"
        if c == "z":
            self.pos += 1
            return "\\z"
        if c in ("<", ">"):
            self.pos += 1
            raise self.error(f"\\{c} (a Unicode word boundary) is not supported")
        found = self.class_escape(flags)
        if isinstance(found, _Set):
            return self.emit_set(found, flags)
        return self.literal(found, flags)

    def class_escape(self, flags: _Flags) -> int | _Set:
        """An escape that stands for one character or a class (valid in and out of [...])."""
        if self.eof():
            raise self.error("incomplete escape sequence, reached end of pattern prematurely")
        c = self.peek()
        self.pos += 1
        simple = {"t": 9, "n": 10, "r": 13, "f": 12, "v": 11, "a": 7}
        if c in simple:
            return simple[c]
        if c in "xuU":
            return self.hex_escape(c)
        if c in "dDsSwW":
            if not flags.u:
                raise self.error(f"\\{c} with the u flag off is not supported")
            return self.perl_class(c)
        if c in "pP":
            return self.unicode_class(c == "P")
        if c.isdigit():
            raise self.error("backreferences are not supported")
        if c.isascii() and not c.isalnum() and c != "\n" and (c.isprintable() or c == " "):
            return ord(c)
        raise self.error(f"unrecognized escape sequence \\{c}")

    def hex_escape(self, kind: str) -> int:
        if self.peek() == "{":
            end = self.p.find("}", self.pos)
            if end < 0:
                raise self.error("unclosed hexadecimal literal")
            digits = self.p[self.pos + 1 : end]
            self.pos = end + 1
            if not 1 <= len(digits) <= 8:
                raise self.error("invalid hexadecimal literal")
        else:
            width = {"x": 2, "u": 4, "U": 8}[kind]
            digits = self.p[self.pos : self.pos + width]
            if len(digits) < width:
                raise self.error("incomplete escape sequence, reached end of pattern prematurely")
            self.pos += width
        if not all(d in "0123456789abcdefABCDEF" for d in digits):
            raise self.error("invalid hexadecimal digit")
        value = int(digits, 16)
        if value > _MAX_CODE_POINT or 0xD800 <= value <= 0xDFFF:
            raise self.error("hexadecimal literal is not a Unicode scalar value")
        return value

    @staticmethod
    def perl_class(c: str) -> _Set:
        lower = c.lower()
        if lower == "d":
            found = _Set([], ["\\p{Nd}"])
        elif lower == "s":
            found = _Set(list(_WHITESPACE), [])
        else:
            found = _Set(list(_WORD_RANGES), list(_WORD_PROPS))
        if c.isupper():
            if lower == "d":
                return _Set([], ["\\P{Nd}"])
            if lower == "s":
                return _Set(_complement(found.ranges), [])
            found.negated = True
        return found

    def unicode_class(self, negated: bool) -> _Set:
        if self.peek() == "{":
            end = self.p.find("}", self.pos)
            if end < 0:
                raise self.error("incomplete escape sequence, reached end of pattern prematurely")
            name = self.p[self.pos + 1 : end]
            self.pos = end + 1
        else:
            name = self.peek()
            if not name:
                raise self.error("incomplete escape sequence, reached end of pattern prematurely")
            self.pos += 1
        found = self.property(name)
        if negated:
            if found.concrete():
                return _Set(_complement(found.ranges), [])
            if len(found.props) == 1:
                p = found.props[0]
                return _Set([], [("\\P" if p[1] == "p" else "\\p") + p[2:]])
            found.negated = True
        return found

    def property(self, name: str) -> _Set:
        key = _loose(name)
        kind = ""
        for sep in ("=", ":"):
            if sep in key:
                kind, key = key.split(sep, 1)
                break
        if kind in ("", "gc", "generalcategory") and key in _BY_LOOSE_CATEGORY:
            return _Set([], [f"\\p{{{_BY_LOOSE_CATEGORY[key]}}}"])
        if kind in ("", "gc", "generalcategory") and key == "lc":
            return _Set([], ["\\p{Lu}", "\\p{Ll}", "\\p{Lt}"])
        bare = key[2:] if kind == "" and key.startswith("is") else key
        if kind in ("", "sc", "script"):
            for k in (key, bare):
                if k in _BY_LOOSE_SCRIPT:
                    return _Set([], [f"\\p{{{_BY_LOOSE_SCRIPT[k]}}}"])
        if kind == "" and key in ("any",):
            return _Set([(0, _MAX_CODE_POINT)], [])
        if kind == "" and key == "ascii":
            return _Set([(0, 0x7F)], [])
        raise self.error(
            f"Unicode property {name!r} is not supported (general categories such as Lu, "
            "scripts such as Greek, Any and ASCII are)"
        )

    # ------------------------------------------------------------ classes

    def class_(self, flags: _Flags) -> str:
        if not flags.u:
            raise self.error("character classes with the u flag off are not supported")
        found = self.bracket(flags, nested=False)
        return self.emit_set(found, flags)

    def emit_set(self, found: _Set, flags: _Flags) -> str:
        body = _class_body(_normalize(found.ranges)) + "".join(found.props)
        if not body:  # the empty class matches nothing; RE2 has no [] to say it
            text = "[^\\x{0}-\\x{10FFFF}]" if not found.negated else "[\\x{0}-\\x{10FFFF}]"
        else:
            text = f"[{'^' if found.negated else ''}{body}]"
        return f"(?i:{text})" if flags.i else text

    def bracket(self, flags: _Flags, nested: bool) -> _Set:
        """``[...]`` starting at '[': the set, with set operations resolved."""
        self.pos += 1
        negated = False
        if self.peek() == "^":
            negated = True
            self.pos += 1
        operands: list[_Set] = []
        operators: list[str] = []
        current = _Set([], [])
        first = True
        while True:
            self.skip_space(flags)
            if self.eof():
                raise self.error("unclosed character class")
            c = self.peek()
            if c == "]" and not first:
                self.pos += 1
                break
            if c in "&-~" and self.peek(1) == c and not first:
                operands.append(current)
                operators.append(c * 2)
                current = _Set([], [])
                self.pos += 2
                first = True
                continue
            self.class_item(current, flags, first)
            first = False
        operands.append(current)
        result = self.apply_operators(operands, operators, flags)
        if negated:
            result = self.negate(result, flags, nested)
        return result

    def negate(self, found: _Set, flags: _Flags, nested: bool) -> _Set:
        if found.negated:
            return _Set(found.ranges, found.props)
        if not nested:
            return _Set(found.ranges, found.props, negated=True)
        if flags.i:
            raise self.error("a negated class inside a class is not supported with (?i)")
        if found.concrete():
            return _Set(_complement(found.ranges), [])
        if len(found.props) == 1 and not found.ranges:
            p = found.props[0]
            return _Set([], [("\\P" if p[1] == "p" else "\\p") + p[2:]])
        raise self.error("this negated class inside a class is not supported")

    def apply_operators(self, operands: list[_Set], operators: list[str], flags: _Flags) -> _Set:
        if not operators:
            return operands[0]
        if flags.i:
            raise self.error("class set operations (&&, --, ~~) are not supported with (?i)")
        for o in operands:
            if not o.ranges and not o.props:
                raise self.error("a class set operation needs a class on each side")
            if not o.concrete() or o.negated:
                raise self.error(
                    "class set operations (&&, --, ~~) are supported on literal characters, "
                    "ranges and ASCII classes only"
                )
        # Precedence, tightest first: && then -- then ~~ (each left to right).
        for op in ("&&", "--", "~~"):
            i = 0
            while i < len(operators):
                if operators[i] != op:
                    i += 1
                    continue
                a, b = operands[i].ranges, operands[i + 1].ranges
                if op == "&&":
                    merged = _intersect(a, b)
                elif op == "--":
                    merged = _intersect(a, _complement(b))
                else:
                    merged = _intersect(a + b, _complement(_intersect(a, b)))
                operands[i : i + 2] = [_Set(merged, [])]
                del operators[i]
        return operands[0]

    def class_item(self, into: _Set, flags: _Flags, first: bool) -> None:
        c = self.peek()
        if c == "[":
            if self.peek(1) == ":":
                posix = self.posix_class()
                if posix is not None:
                    self.union(into, posix)
                    return
            self.union(into, self.bracket(flags, nested=True))
            return
        lo = self.class_char(flags)
        if isinstance(lo, _Set):
            self.union(into, lo)
            return
        self.skip_space(flags)
        if self.peek() == "-" and self.peek(1) not in ("]", "-"):
            self.pos += 1
            self.skip_space(flags)
            hi = self.class_char(flags)
            if isinstance(hi, _Set):
                raise self.error("invalid range boundary, must be a literal")
            if hi < lo:
                raise self.error("invalid character class range, the start must be <= the end")
            self.union(into, _Set([(lo, hi)], []))
        else:
            self.union(into, _Set([(lo, lo)], []))

    def class_char(self, flags: _Flags) -> int | _Set:
        c = self.peek()
        if c == "[":
            raise self.error("invalid range boundary, must be a literal")
        self.pos += 1
        if c != "\\":
            return ord(c)
        if self.peek() in ("b", "B", "A", "z", "<", ">"):
            raise self.error("invalid escape sequence found in character class")
        return self.class_escape(flags)

    def posix_class(self) -> _Set | None:
        end = self.p.find(":]", self.pos + 2)
        if end < 0:
            return None
        name = self.p[self.pos + 2 : end]
        negated = name.startswith("^")
        if name.lstrip("^") not in _POSIX:
            if name.lstrip("^").isalpha():
                raise self.error(f"unknown POSIX class [:{name}:]")
            return None
        self.pos = end + 2
        ranges = list(_POSIX[name.lstrip("^")])
        return _Set(_complement(ranges) if negated else ranges, [])

    def union(self, into: _Set, other: _Set) -> None:
        """``into`` |= ``other``; a complemented set (\\W) only stands alone in its class."""
        empty = not (into.ranges or into.props or into.negated)
        if (other.negated and not empty) or (into.negated and (other.ranges or other.props)):
            raise self.error(
                "\\W or a negated property together with other items in one class is not supported"
            )
        into.negated = into.negated or other.negated
        into.ranges.extend(other.ranges)
        into.props.extend(other.props)


def translate(pattern: str) -> str:
    """The RE2 pattern that matches exactly what ``pattern`` matches in Chroma.

    Raises InvalidArgumentError for a pattern Chroma refuses, and for one this
    translation cannot carry over exactly.
    """
    try:
        return _Parser(pattern).parse()
    except _Refused as exc:
        raise InvalidArgumentError(f"Invalid regular expression {pattern!r}: {exc}") from None


@functools.lru_cache(maxsize=256)
def compile_pattern(pattern: str) -> Any:
    """The compiled RE2 program for a Chroma-dialect pattern (cached)."""
    import re2

    options = re2.Options()
    options.max_mem = _MAX_MEM
    options.log_errors = False
    options.never_capture = True
    try:
        return re2.compile(translate(pattern), options)
    except re2.error as exc:
        raise InvalidArgumentError(
            f"Invalid regular expression {pattern!r}: {exc} (too large or too deeply nested)"
        ) from None


@functools.lru_cache(maxsize=256)
def _matcher(pattern: str) -> Callable[[str], bool]:
    """``text -> matches?`` for one pattern. The binding's ``search`` builds a match
    object and maps byte offsets back to characters, twice the cost of a yes or no,
    which needs only its underlying ``Match`` on the UTF-8 bytes, used when the
    binding has it."""
    compiled = compile_pattern(pattern)
    import re2

    raw = getattr(compiled, "_regexp", None)
    anchor = getattr(getattr(re2, "_Anchor", None), "UNANCHORED", None)
    if raw is None or anchor is None or not hasattr(raw, "Match"):
        return lambda text: compiled.search(text) is not None

    def matches(text: str) -> bool:
        data = text.encode("utf-8")
        return bool(raw.Match(anchor, data, 0, len(data))[0] != _NO_MATCH)

    return matches


_NO_MATCH = (-1, -1)


def check(pattern: str) -> None:
    """Refuse a pattern that cannot run: compiled where the engine is installed, checked
    for syntax only in the HTTP-only client (whose server compiles it)."""
    try:
        import re2  # noqa: F401
    except ImportError:
        translate(pattern)
        return
    compile_pattern(pattern)


def search(pattern: str, text: str) -> bool:
    """Does ``pattern`` match anywhere in ``text``? Linear in ``len(text)``."""
    return _matcher(pattern)(text)


_QUANTIFIERS = "*?+{"
_CLASS_ESCAPES = "dDwWsSbBAz"


def required_literal(pattern: str) -> str | None:
    """The longest run of plain characters that every match of ``pattern`` contains,
    if one of three characters or more can be told for sure; else None.

    It lets the trigram index narrow a ``$regex`` to the documents holding that text
    before the pattern runs. Anything this reading is unsure of (flags, alternation,
    escapes that are not single punctuation, nested classes) gives None: the
    pattern then runs on every document, as without it.
    """
    if "(?" in pattern or "|" in pattern:
        return None
    best, run = "", ""
    depth, i, n = 0, 0, len(pattern)
    last_plain = False  # the atom just read is a plain character at the run's end

    def close(current: str) -> str:
        return current if len(current) > len(best) else best

    while i < n:
        c = pattern[i]
        if c in _QUANTIFIERS:
            if c == "{":
                end = pattern.find("}", i)
                if end < 0:
                    return None
                i = end
            if last_plain and c != "+":
                run = run[:-1]  # the character may be absent
            if depth == 0:
                best, run = close(run), ""
            last_plain = False
        elif c == "\\":
            if i + 1 >= n:
                return None
            nxt = pattern[i + 1]
            i += 1
            if nxt.isalnum() or nxt.isspace():
                if nxt not in _CLASS_ESCAPES:
                    return None
                best, run, last_plain = close(run), "", False
            elif depth == 0:
                run, last_plain = run + nxt, True
            else:
                last_plain = False
        elif c == "[":
            j = i + 1
            if j < n and pattern[j] == "^":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                if pattern[j] == "[":
                    return None
                j += 2 if pattern[j] == "\\" else 1
            if j >= n:
                return None
            i = j
            best, run, last_plain = close(run), "", False
        elif c in "()":
            depth += 1 if c == "(" else -1
            best, run, last_plain = close(run), "", False
        elif c in ".^$":
            best, run, last_plain = close(run), "", False
        elif depth == 0:
            run, last_plain = run + c, True
        else:
            last_plain = False
        i += 1
    best = close(run)
    return best if len(best) >= 3 else None


_META = ".+*?()|[]{}^$"


def plain_text(pattern: str) -> tuple[str, bool, bool] | None:
    """``(text, at_start, at_end)`` when ``pattern`` (already checked) matches exactly the
    documents that contain ``text`` (or start with it, end with it, or equal it, as
    anchored by a leading ``^`` and a trailing ``$``); else None.

    Only plain characters and escaped punctuation, with no flags, classes, groups or
    repetition: for those, Chroma's dialect means a plain text search, which a store
    can run as ``LIKE`` through its trigram index instead of reading the documents out.
    Without the ``m`` flag, ``^`` and ``$`` are the start and end of the whole document.
    """
    at_start = pattern.startswith("^")
    body = pattern[1:] if at_start else pattern
    at_end = False
    text: list[str] = []
    i = 0
    while i < len(body):
        c = body[i]
        if c == "\\":
            nxt = body[i + 1] if i + 1 < len(body) else ""
            if not nxt or nxt.isalnum() or nxt.isspace() or not nxt.isascii():
                return None  # a class, an escape sequence, or an odd case: not plain
            text.append(nxt)
            i += 2
            continue
        if c == "$" and i == len(body) - 1:
            at_end = True
        elif c in _META:
            return None
        else:
            text.append(c)
        i += 1
    return ("".join(text), at_start, at_end) if text else None
