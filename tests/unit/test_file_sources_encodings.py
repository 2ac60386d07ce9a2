"""``read_text`` in encodings whose newline is not the byte 0x0A (UTF-16/32, EBCDIC): lines
split on code unit boundaries at any split and block boundary; other encodings refused (no Ray)."""

from __future__ import annotations

import codecs
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import raystream as rs
from raystream.engine.connectors import END_OF_INPUT
from raystream.engine.errors import ConfigError
from raystream.engine.records import Batch
from raystream.operators.sources import TextSource


def read_split_by_split(source: TextSource) -> list[str]:
    """The lines of every split, each read by a reader of its own (as parallel subtasks),
    in split order: the file's lines, in order, if the splits share them correctly."""
    out: list[str] = []
    for split in source.create_splits(1):
        reader = source.create_reader(None)
        reader.add_splits([split])
        while (b := reader.poll_next()) is not END_OF_INPUT:
            assert isinstance(b, Batch)
            out.extend(b.records())
    return out


def expected(data: bytes, encoding: str) -> list[str]:
    text = data.decode(encoding)
    if not text:
        return []
    lines = text.split("\n")
    if text.endswith("\n"):
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def test_utf16_le_lines_over_a_megabyte_with_newline_bytes_at_odd_offsets(tmp_path):
    # U+0A41 is b"\x41\x0a" in UTF-16-LE: a byte-wise splitter cut lines at its 0x0a
    # (3,000 lines came out as 3,002 records); the file spans several 1 MB read blocks
    lines = [f"{i:06d}" + "\u0a41" * 500 for i in range(3000)]
    path = tmp_path / "utf16le.txt"
    path.write_bytes(("\n".join(lines) + "\n").encode("utf-16-le"))
    assert read_split_by_split(TextSource(str(path), encoding="utf-16-le")) == lines
    for split_bytes in (1 << 20, 333_333, 7):
        if split_bytes == 7:
            path.write_bytes(("\n".join(lines[:40]) + "\n").encode("utf-16-le"))
            want = lines[:40]
        else:
            want = lines
        assert read_split_by_split(TextSource(str(path), split_bytes=split_bytes, encoding="utf-16-le")) == want


@pytest.mark.parametrize("bom,encoding,written", [
    (codecs.BOM_UTF16_LE, "utf-16", "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16", "utf-16-be"),
    (b"", "utf-16", "utf-16-le"),  # no BOM: native order (little endian here), as bytes.decode
    (codecs.BOM_UTF32_BE, "utf-32", "utf-32-be"),
    (codecs.BOM_UTF32_LE, "utf-32", "utf-32-le"),
])
def test_a_byte_order_mark_gives_each_file_its_order_and_is_not_part_of_the_first_line(tmp_path, bom, encoding, written):
    if not bom and codecs.BOM_UTF16 != codecs.BOM_UTF16_LE:
        pytest.skip("big endian machine")
    lines = ["\u0a0a\u0100 first", "ਊ\r", "", "𝄞 last"]
    path = tmp_path / "f.txt"
    path.write_bytes(bom + "\n".join(lines).encode(written))
    for split_bytes in (3, 5, 16, 1 << 20):
        assert read_split_by_split(TextSource(str(path), split_bytes=split_bytes, encoding=encoding)) == \
            ["\u0a0a\u0100 first", "ਊ", "", "𝄞 last"]


@settings(max_examples=150, deadline=None)
@given(
    lines=st.lists(st.text(st.sampled_from("a\r\u0a41\u0a0a\u0100\u0d0a\u2028é𝄞日"), max_size=12), max_size=12),
    trailing=st.booleans(),
    encoding=st.sampled_from(["utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be", "utf-16", "utf-32", "utf-8",
                              "gb18030"]),
    split_bytes=st.integers(1, 64),
)
def test_any_split_boundary_gives_the_lines_of_the_decoded_file(tmp_path_factory, lines, trailing, encoding, split_bytes):
    data = ("\n".join(lines) + ("\n" if trailing and lines else "")).encode(encoding)
    path = tmp_path_factory.mktemp("enc") / "f.txt"
    path.write_bytes(data)
    got = read_split_by_split(TextSource(str(path), split_bytes=split_bytes, encoding=encoding))
    assert got == expected(data, encoding)


def test_an_ebcdic_newline_is_its_own_byte(tmp_path):
    path = tmp_path / "f.txt"
    path.write_bytes("one\ntwo%\nthree\n".encode("cp500"))  # "\n" is 0x25 in cp500, "%" is 0x6c
    assert read_split_by_split(TextSource(str(path), split_bytes=4, encoding="cp500")) == ["one", "two%", "three"]


@pytest.mark.parametrize("encoding,message", [
    ("unicode_escape", r"read_text\(encoding='unicode_escape'\) cannot split lines in it: it encodes a newline as "
                       r"b'\\\\n', not as one byte of its own; re-encode the files to UTF-8"),
    ("punycode", r"read_text\(encoding='punycode'\) cannot split lines"),
    ("rot13", r"read_text\(encoding='rot13'\): 'rot13' is not a text encoding"),
    ("no-such-codec", r"read_text\(encoding='no-such-codec'\): unknown encoding"),
])
def test_encodings_whose_lines_cannot_be_split_are_refused_when_the_job_is_built(tmp_path, encoding, message):
    path = tmp_path / "f.txt"
    path.write_bytes(b"x\n")
    with pytest.raises(ConfigError, match=message):
        rs.StreamEnvironment().read_text(str(path), encoding=encoding)


def test_a_file_not_in_the_encoding_given_names_it_and_the_offset(tmp_path: Path):
    path = tmp_path / "f.txt"
    path.write_bytes(b"ok\n\xff\xfe\xfd\n")
    with pytest.raises(ValueError, match=r"f.txt at byte 3: cannot decode as 'utf-8' .*pass the encoding the files "
                                         r"were written in"):
        read_split_by_split(TextSource(str(path)))
