"""Every parser of data from outside pnfs-monitor, under generated input (Hypothesis):
binary junk, huge lines, truncation, NULs, non-UTF-8, and well-formed input cut or mixed
with junk. The outcome is a value of the promised shape or the parser's own error naming
the input; never another exception, a hang, or a wrong value (round trips hold).

Budget: the whole file runs in well under a minute (``EXAMPLES`` per parser; no example
database, no deadline: a slow shared CI machine must not fail it). docs/promises.md says
how many inputs each parser survived."""

from __future__ import annotations

import bz2
import gzip
import math
import re
import string
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pnfsmon.catalog.inventory import BadDump, read_entries
from pnfsmon.crawler.chimera import LOCALITIES, parse_locality
from pnfsmon.crawler.chimera_db import FILE, BadChimeraRow, adler32_of, listed_from_row
from pnfsmon.crawler.listing import WalkStats
from pnfsmon.crawler.pnfs import pools_text
from pnfsmon.schema import config, db, xrdcks
from pnfsmon.schema.dcache import MalformedMetadata, parse_checksums, parse_layer2
from pnfsmon.schema.errors import ConfigError
from pnfsmon.schema.paths import decode_line, display, encode_line
from pnfsmon.schema.xrootd import XRootDUrl, parse_checksum_response

#: Inputs per parser (the figures docs/promises.md records); round trips of well-formed
#: input need fewer.
EXAMPLES = 1000
FILE_EXAMPLES = 200  # parsers that read a file: each example writes one
ROUND_TRIPS = 200

FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=list(HealthCheck))
FUZZ_FILES = settings(FUZZ, max_examples=FILE_EXAMPLES)
FUZZ_ROUND_TRIPS = settings(FUZZ, max_examples=ROUND_TRIPS)

HEX8 = re.compile(r"[0-9a-f]{8}")
hex_values = st.integers(0, 2**32 - 1).map(lambda v: f"{v:x}")
junk = st.binary(max_size=100)
huge = st.integers(10_000, 70_000).map(lambda n: b"A" * n)
control = st.sampled_from([b"\0", b"\n", b"\r", b"\t", b"\x1c", b"\x85", b"\xff", b"\xc3",
                           b";", b":", b"=", b",", b" "])


def cut(data: bytes, where: int) -> bytes:
    """``data`` truncated at a fraction ``where``/100 of its length."""
    return data[:len(data) * where // 100]


def mixed(pieces) -> st.SearchStrategy[bytes]:
    """Well-formed pieces, junk and control bytes in any order, maybe truncated."""
    return st.builds(lambda parts, where: cut(b"".join(parts), where),
                     st.lists(st.one_of(pieces, junk, control), max_size=8),
                     st.integers(0, 100))


def is_adler32(value) -> bool:
    return value is None or (isinstance(value, str) and HEX8.fullmatch(value) is not None)


# -- dCache dot-commands --------------------------------------------------------------

layer2_pieces = st.one_of(
    st.just(b"2,0,0,0.0,0.0\n"),
    hex_values.map(lambda h: f":c=1:{h};".encode()),
    st.integers(0, 2**64).map(lambda n: f"l={n};".encode()),
    st.sampled_from([b"h=yes;", b"al=ONLINE;", b"rp=REPLICA;", b"\n:", b"pool-a\n",
                     b"pool_b-2\n"]),
)


@FUZZ
@given(st.one_of(mixed(layer2_pieces), junk, huge))
@example(b":c=1:" + b"f" * 100_000 + b";")
@example(b"\xff\xfe pool\n")
def test_layer2_gives_a_value_or_says_what_is_wrong(text):
    try:
        layer = parse_layer2(text)
    except MalformedMetadata as err:
        assert str(err)
        return
    assert is_adler32(layer.adler32)
    assert all(isinstance(p, str) and p.isascii() for p in layer.pools)
    text_pools = pools_text(layer.pools)
    assert text_pools is None or len(text_pools) <= 255


@FUZZ_ROUND_TRIPS
@example("1", 6, [])  # found: ":c=1:1;" wrapped as ":al=ON" "LINE;c" "=1:1;…" lost it
@given(hex_values, st.integers(1, 60), st.lists(st.from_regex(r"[a-z][a-z0-9_-]{0,20}",
                                                              fullmatch=True), max_size=5))
def test_layer2_finds_the_recorded_checksum_however_the_flags_wrap(value, width, pools):
    flags = f":al=ONLINE;c=1:{value};l=123;rp=REPLICA;h=yes;"
    wrapped = "\n".join(flags[i:i + width] for i in range(0, len(flags), width))
    text = ("2,0,0,0.0,0.0\n" + wrapped + "\n" + "\n".join(pools)).encode()
    layer = parse_layer2(text)
    assert layer.adler32 == value.rjust(8, "0")
    assert layer.pools == tuple(pools)


checksum_pieces = st.one_of(
    hex_values.map(lambda h: f"ADLER32:{h}".encode()),
    st.just(b"MD5_TYPE:d41d8cd98f00b204e9800998ecf8427e"),
    st.sampled_from([b", ", b",", b"\n", b" "]),
)


@FUZZ
@given(st.one_of(mixed(checksum_pieces), junk, huge))
def test_chimera_checksums_give_a_value_or_say_what_is_wrong(text):
    try:
        value = parse_checksums(text)
    except MalformedMetadata as err:
        assert str(err)
        return
    assert is_adler32(value)


@FUZZ_ROUND_TRIPS
@given(hex_values, st.booleans())
def test_chimera_checksums_find_the_adler32_beside_others(value, md5_first):
    parts = [f"ADLER32:{value}", "MD5_TYPE:d41d8cd98f00b204e9800998ecf8427e"]
    text = ", ".join(reversed(parts) if md5_first else parts).encode()
    assert parse_checksums(text) == value.rjust(8, "0")


@FUZZ
@given(st.one_of(mixed(st.sampled_from([x.encode() for x in LOCALITIES])), junk, huge))
def test_chimera_locality_is_known_or_refused(text):
    try:
        assert parse_locality(text) in LOCALITIES
    except MalformedMetadata as err:
        assert str(err)


# -- the XrdCks extended attribute ----------------------------------------------------

@FUZZ
@given(st.one_of(junk, st.binary(min_size=96, max_size=96), huge),
       st.integers(-2**63, 2**63 - 1))
def test_xrdcks_attribute_gives_a_checksum_or_none(data, mtime):
    assert is_adler32(xrdcks.parse(data, mtime))


@FUZZ
@given(st.integers(0, 2**32 - 1), st.integers(-2**63, 2**63 - 1),
       st.integers(-2**63, 2**63 - 1), st.integers(0, 95), st.integers(0, 95), st.binary(
           min_size=1, max_size=1))
def test_xrdcks_attribute_is_trusted_only_for_its_mtime(value, mtime, other, at, cut_at,
                                                         byte):
    record = xrdcks.encode(f"{value:08x}", mtime)
    assert xrdcks.parse(record, mtime) == f"{value:08x}"
    if other != mtime:
        assert xrdcks.parse(record, other) is None  # stale: the file changed since
    assert xrdcks.parse(record[:cut_at], mtime) is None  # truncated
    flipped = record[:at] + byte + record[at + 1:]
    got = xrdcks.parse(flipped, mtime)
    # A changed byte in the name, mtime or length refuses it; in the value it is that
    # value (the storage's record is what it is); never something else.
    assert got is None or got == flipped[32:36].hex()


# -- XRootD checksum query answers ----------------------------------------------------

@FUZZ
@given(st.one_of(mixed(st.one_of(hex_values.map(lambda h: f"adler32 {h}".encode()),
                                 st.sampled_from([b"\0", b"md5 ", b"adler32"]))),
                 junk, huge, st.none()))
def test_xrootd_checksum_answer_gives_a_checksum_or_none(response):
    assert is_adler32(parse_checksum_response(response))


@FUZZ_ROUND_TRIPS
@given(hex_values, st.sampled_from(["adler32", "ADLER32", "Adler32"]),
       st.sampled_from(["", "\0", "\0\0", "\n"]))
def test_xrootd_checksum_answer_round_trips(value, name, tail):
    response = f"{name} {value}{tail}".encode()
    assert parse_checksum_response(response) == value.rjust(8, "0")
    assert parse_checksum_response(f"md5 {value}{tail}".encode()) is None


# -- Chimera database rows ------------------------------------------------------------

text_or_bytes = st.one_of(st.text(max_size=50), st.binary(max_size=50))
rows = st.tuples(
    text_or_bytes,
    st.one_of(st.just(FILE), st.sampled_from([16384, 40960, 4096, -1])),
    st.one_of(st.integers(-2**70, 2**70), st.none(), st.floats(allow_nan=True),
              st.booleans()),
    st.one_of(st.decimals(allow_nan=True, allow_infinity=True), st.none(),
              st.integers(-2**70, 2**70), st.floats(), st.text(max_size=20)),
    st.one_of(st.none(), text_or_bytes, hex_values),
    st.one_of(st.none(), text_or_bytes),
    st.booleans(),
)


@FUZZ
@given(rows)
@example(("/f", FILE, None, Decimal(1), None, None, False))  # found: TypeError
@example(("/f", FILE, 1, Decimal("NaN"), None, None, False))  # found: ValueError
@example(("/f", FILE, -1, Decimal(1), None, None, False))
def test_a_chimera_row_is_a_file_or_a_clear_refusal(row):
    stats = WalkStats()
    try:
        item = listed_from_row(b"/pnfs/example.org", row, stats)
    except BadChimeraRow as err:
        assert "Chimera row for /pnfs/example.org" in str(err)
        return
    if row[1] != FILE:
        assert item is None and stats.skipped == 1
        return
    assert isinstance(item.size, int) and 0 <= item.size < 2**63
    assert isinstance(item.mtime_ns, int) and abs(item.mtime_ns) < 2**63
    assert is_adler32(item.recorded_adler32)
    assert item.pool is None or len(item.pool) <= 255


@FUZZ
@given(st.one_of(st.none(), text_or_bytes, hex_values))
def test_a_chimera_checksum_is_hex_or_refused(isum):
    try:
        assert is_adler32(adler32_of(isum))
    except ValueError as err:
        assert "Adler32" in str(err)


@FUZZ_ROUND_TRIPS
@given(st.integers(0, 2**63 - 1), st.decimals(min_value=-10**9, max_value=9 * 10**9,
                                                  places=6), hex_values)
def test_a_good_chimera_row_keeps_its_values(size, mtime, value):
    item = listed_from_row(b"/p", ("/d/f", FILE, size, mtime, value, "pool1 pool2", False),
                           WalkStats())
    assert (item.path, item.size, item.recorded_adler32) == (b"/p/d/f", size,
                                                             value.rjust(8, "0"))
    assert item.mtime_ns == int(Decimal(mtime) * 10**9) and item.pool == "pool1 pool2"


# -- inventory dumps (every accepted format) -------------------------------------------

lfns = st.from_regex(r"/store/[a-zA-Z0-9_./-]{1,40}", fullmatch=True)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(),
              st.text(max_size=20)),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=6)
csv_pieces = st.one_of(
    st.just(b"lfn,size,adler32,created\n"),
    st.builds(lambda lfn, size, value: f"{lfn},{size},{value},1700000000\n".encode(),
              lfns, st.integers(0, 10**12), hex_values),
    st.sampled_from([b'"', b",", b'""', b"\r\n", b"nan", b"inf", b"-1", b"1.5", b"1_0"]),
)
jsonl_pieces = st.one_of(
    st.builds(lambda lfn, size, value: (
        f'{{"lfn": "{lfn}", "size": {size}, "adler32": "{value}"}}\n').encode(),
        lfns, st.integers(0, 10**12), hex_values),
    st.sampled_from([b"[" * 5000, b'{"lfn": 1}\n', b'{"name": "/a", "size": Infinity}\n',
                     b'{"path": "/a", "bytes": 1.5}\n', b'{"lfn": "/a", "checksum": 12}\n',
                     b'{"lfn": "/a", "created": NaN}\n', b"\n", b"{"]),
)


def compressors(fmt: str):
    return st.sampled_from([(f"dump.{fmt}", lambda b: b),
                            (f"dump.{fmt}.gz", gzip.compress),
                            (f"dump.{fmt}.bz2", bz2.compress)])


def read_all(tmp_path: Path, name: str, data: bytes, fmt: str = "auto"):
    path = tmp_path / name
    path.write_bytes(data)
    try:
        return list(read_entries(path, fmt)), None
    except BadDump as err:
        return None, err
    finally:
        path.unlink()


def assert_entries(entries) -> None:
    for e in entries:
        assert isinstance(e.lfn, bytes) and e.lfn and b"\n" not in e.lfn
        assert e.size is None or (isinstance(e.size, int) and 0 <= e.size < 2**63)
        assert is_adler32(e.adler32)
        assert e.created is None or (isinstance(e.created, float)
                                     and math.isfinite(e.created))


@pytest.mark.parametrize("fmt, pieces", [("txt", mixed(st.builds(
    lambda lfn: lfn.encode() + b"\n", lfns))), ("csv", mixed(csv_pieces)),
    ("jsonl", mixed(jsonl_pieces))])
def test_an_inventory_dump_is_read_or_refused_with_its_line(tmp_path, fmt, pieces):
    @FUZZ_FILES
    @given(st.one_of(pieces, junk, huge, st.builds(
        lambda d, r: d + r, json_values.map(lambda v: repr(v).encode()), junk)),
        compressors(fmt), st.integers(0, 100))
    def check(data, compressor, truncate_at):
        name, compress = compressor
        packed = compress(data)
        if truncate_at < 100:  # a dump cut short (a copy that died)
            packed = cut(packed, truncate_at)
        entries, err = read_all(tmp_path, name, packed)
        if err is not None:
            assert str(err) and (re.search(r"line \d+", str(err)) or "dump" in str(err)
                                 or name in str(err)), str(err)
        else:
            assert_entries(entries)

    check()


@FUZZ_ROUND_TRIPS
@given(st.lists(st.tuples(lfns, st.integers(0, 2**63 - 1), hex_values), min_size=1,
                max_size=20), st.sampled_from(["csv", "jsonl", "txt"]))
def test_an_inventory_dump_keeps_every_entry_exactly(tmp_path_factory, entries, fmt):
    tmp_path = tmp_path_factory.getbasetemp()
    if fmt == "csv":
        data = "lfn,size,adler32\n" + "".join(f"{lfn},{size},{v}\n" for lfn, size, v in entries)
    elif fmt == "jsonl":
        data = "".join(f'{{"lfn": "{lfn}", "size": {size}, "adler32": "{v}"}}\n'
                       for lfn, size, v in entries)
    else:
        data = "".join(f"{lfn}\n" for lfn, _, _ in entries)
    got, err = read_all(tmp_path, f"exact.{fmt}", data.encode())
    assert err is None, err
    assert [e.lfn for e in got] == [lfn.encode() for lfn, _, _ in entries]
    if fmt != "txt":
        assert [(e.size, e.adler32) for e in got] == [(s, v.rjust(8, "0"))
                                                      for _, s, v in entries]


@pytest.mark.parametrize("name, data, says", [
    # Found by the fuzzing above; each was a traceback or a wrong value before.
    ("cut.txt.gz", gzip.compress(b"/store/a\n" * 100)[:30], "cannot be read to its end"),
    ("cut.csv.bz2", bz2.compress(b"lfn\n/store/a\n" * 100)[:40], "cannot be read to its end"),
    ("fake.jsonl.gz", b"not gzip at all", "cannot be read to its end"),
    ("deep.jsonl", b"[" * 100_000 + b"\n", "line 1: JSON nested too deep"),
    ("inf.jsonl", b'{"lfn": "/a", "size": Infinity}\n', "line 1: size inf is not a whole"),
    ("half.jsonl", b'{"lfn": "/a", "size": 1.5}\n', "line 1: size 1.5 is not a whole"),
    ("bool.jsonl", b'{"lfn": "/a", "size": true}\n', "line 1: size True is not a whole"),
    ("num.jsonl", b'{"lfn": "/a", "adler32": 12}\n', "line 1: Adler32 12 is not a string"),
    ("nan.jsonl", b'{"lfn": "/a", "created": NaN}\n', "line 1: created nan is not epoch"),
    ("int.jsonl", b'{"lfn": 7}\n', "line 1: the LFN 7 is not a string"),
    ("big.jsonl", b'{"lfn": "/a", "size": 99999999999999999999}\n', "line 1: size"),
    ("wide.csv", b"lfn\n" + b"x" * 200_000 + b"\n", "not CSV (field larger than field limit"),
    ("shifted.csv", b"lfn,size\n/a,12,34\n", "line 2: more fields than the header"),
    ("under.csv", b"lfn,size\n/a,1_000\n", "line 2: size '1_000' is not a whole"),
    ("nul.txt", b"/store/a\0b\n", "line 1: a NUL byte"),
], ids=lambda value: value if isinstance(value, str) and "." in value else "")
def test_what_the_fuzzing_found_in_dumps_is_refused_with_its_line(tmp_path, name, data,
                                                                  says):
    entries, err = read_all(tmp_path, name, data)
    assert err is not None and says in str(err), (entries, err)


# -- the configuration file -------------------------------------------------------------

config_pieces = st.one_of(
    st.sampled_from([b"[pnfsmon]\n", b"[site A]\n", b"[site B]\n", b"[site ]\n", b"=\n",
                     b"[", b"]", b"\n", b" ", b"%(x)s", b"\xef\xbb\xbf"]),
    st.builds(lambda k, v: k + b" = " + v + b"\n",
              st.sampled_from([b"db", b"db_password_file", b"grace", b"recheck_after",
                               b"max_missing_fraction", b"max_orphan_fraction",
                               b"max_crawl_drop", b"parallel", b"lfn_prefix", b"path_prefix",
                               b"prune_events_after", b"prune_vanished_after",
                               b"mysql_local_infile", b"ignore", b"worker_db"]),
              st.one_of(st.sampled_from([b"1", b"-1", b"nan", b"inf", b"-inf", b"1e400",
                                         b"\xc2\xb2", b"\xd9\xa1", b"yes", b"/store",
                                         b"mysql://u@h:port/d", b"sqlite:///x"]),
                        st.binary(max_size=20))),
)


@FUZZ_FILES
@given(st.one_of(mixed(config_pieces), junk, huge))
@example(b"[site A]\ngrace = nan\n")
@example(b"[site A]\nmax_orphan_fraction = NaN\n")
@example(b"[site A]\nparallel = \xc2\xb2\n")
@example(b"[pnfsmon]\nprune_events_after = nan\n")
@example(b"[pnfsmon]\ndb = mysql://u@h:port/d\n")
def test_the_configuration_file_is_read_or_refused_in_one_line(tmp_path_factory,
                                                                 monkeypatch_session, data):
    path = tmp_path_factory.getbasetemp() / "fuzz.conf"
    path.write_bytes(data)
    monkeypatch_session.setenv("PNFSMON_CONFIG", str(path))
    try:
        settings_ = config.load()
        sites = settings_.sites
    except ConfigError as err:
        assert str(err) and "\n" not in str(err)
        return
    for value in (settings_.events_retention, settings_.vanished_retention):
        assert math.isfinite(value) and value >= 0
    for site in sites.values():
        for value in (site.grace, site.recheck_after, site.max_missing_fraction,
                      site.max_orphan_fraction, site.max_crawl_drop):
            assert math.isfinite(value) and value >= 0, site
        assert site.parallel is None or site.parallel >= 1


@pytest.fixture(scope="module")
def monkeypatch_session():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


# -- URLs and paths on the command line -------------------------------------------------

url_pieces = st.one_of(
    st.sampled_from([b"mysql+pymysql://", b"postgresql+psycopg://", b"sqlite:///",
                     b"root://", b"user", b":", b"@", b"/", b"?", b"=", b"&", b"%",
                     b"[::1]", b":99999999", b":port", b"#"]),
    st.text(alphabet=string.printable, max_size=10).map(str.encode),
)


@FUZZ
@given(st.one_of(mixed(url_pieces), junk))
@example(b"mysql+pymysql://mon@dbhost:port/pnfsmon")  # found: a ValueError traceback
def test_a_database_url_is_parsed_or_refused_in_one_line(data):
    text = data.decode("utf-8", "surrogateescape")
    try:
        url = db.parse_url(text)
    except ConfigError as err:
        assert "not a database URL" in str(err) and "\n" not in str(err)
        return
    assert url.drivername


@FUZZ
@given(st.one_of(mixed(url_pieces), junk))
def test_an_xrootd_url_is_parsed_or_refused(data):
    try:
        url = XRootDUrl.parse(data)
    except ConfigError as err:
        assert "not an XRootD URL" in str(err)
        return
    assert url.server.split("://")[0] + "://" in ("root://", "roots://", "xroot://",
                                                  "xroots://")
    assert url.path.startswith("/")


@FUZZ
@given(st.one_of(junk, huge, st.binary(max_size=4100)))
def test_a_path_is_shown_unambiguously_and_encoded_reversibly(path):
    shown = display(path)
    assert "\n" not in shown and "\0" not in shown
    line = encode_line(path)
    assert line.isascii() and "\n" not in line and " " not in line
    assert decode_line(line) == path
