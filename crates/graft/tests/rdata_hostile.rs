//! The R data reader on hand-made hostile and truncated input: every malformed stream is a
//! clear error of the right kind, none panics, and no length is trusted before it is checked
//! against the bytes that are left.

use graft::io::rdata::{decode_blob, parse, Compression, LazyLoadDb, Limits, RDataError, RValue};
use std::io::Write;

fn int(v: i32) -> [u8; 4] {
    v.to_be_bytes()
}

/// An item's flags word: type, has-attributes, has-tag, levels.
fn flags(ty: u32, attr: bool, tag: bool, levels: u32) -> [u8; 4] {
    int((ty | (attr as u32) << 9 | (tag as u32) << 10 | levels << 12) as i32)
}

/// `X\n`, format version 3, native encoding UTF-8, then `body`.
fn ser(body: &[u8]) -> Vec<u8> {
    let mut out = b"X\n".to_vec();
    for v in [3, 0x040201, 0x030500, 5] {
        out.extend(int(v));
    }
    out.extend(b"UTF-8");
    out.extend(body);
    out
}

fn charsxp(s: &str) -> Vec<u8> {
    let mut out = flags(9, false, false, 64).to_vec();
    out.extend(int(s.len() as i32));
    out.extend(s.as_bytes());
    out
}

fn strsxp(items: &[&str]) -> Vec<u8> {
    let mut out = flags(16, false, false, 0).to_vec();
    out.extend(int(items.len() as i32));
    items.iter().for_each(|s| out.extend(charsxp(s)));
    out
}

fn symbol(s: &str) -> Vec<u8> {
    let mut out = flags(1, false, false, 0).to_vec();
    out.extend(charsxp(s));
    out
}

const NIL: [u8; 4] = 254i32.to_be_bytes();

/// `list(a = c("x", "yz"), b = 7L)`: a named list, its names attribute a tagged pairlist.
fn named_list() -> Vec<u8> {
    let mut out = flags(19, true, false, 0).to_vec();
    out.extend(int(2));
    out.extend(strsxp(&["x", "yz"]));
    out.extend(flags(13, false, false, 0));
    out.extend(int(1));
    out.extend(int(7));
    out.extend(flags(2, false, true, 0));
    out.extend(symbol("names"));
    out.extend(strsxp(&["a", "b"]));
    out.extend(NIL);
    out
}

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    let mut out = int(data.len() as i32).to_vec();
    out.extend(e.finish().unwrap());
    out
}

fn err(bytes: &[u8]) -> RDataError {
    parse(bytes, &Limits::default()).expect_err("malformed input must be an error")
}

#[test]
fn a_named_list_reads_back() {
    let got = parse(&ser(&named_list()), &Limits::default()).unwrap();
    assert_eq!(got.names().unwrap(), &[Some("a".into()), Some("b".into())]);
    assert_eq!(got.get("a").unwrap().strings().unwrap(), &[Some("x".into()), Some("yz".into())]);
    assert_eq!(got.get("b").unwrap().value, RValue::Integer(vec![Some(7)]));
}

#[test]
fn wrong_magic_and_versions_are_refused() {
    let mut bad = ser(&strsxp(&["a"]));
    bad[0] = b'R';
    assert!(matches!(err(&bad), RDataError::BadHeader(_)));
    let mut ascii = ser(&strsxp(&["a"]));
    ascii[0] = b'A';
    assert!(err(&ascii).to_string().contains("ASCII"), "{}", err(&ascii));
    let mut v4 = ser(&strsxp(&["a"]));
    v4[2..6].copy_from_slice(&int(4));
    assert!(err(&v4).to_string().contains("format version 4"));
    // Compressed bytes are not a serialization.
    assert!(matches!(err(&[0x1f, 0x8b, 0, 0]), RDataError::BadHeader(_)));
}

#[test]
fn every_truncation_is_an_error() {
    let full = ser(&named_list());
    parse(&full, &Limits::default()).unwrap();
    for n in 0..full.len() {
        let e = err(&full[..n]);
        assert!(matches!(e, RDataError::Truncated { .. } | RDataError::BadLength { .. }), "prefix {n}: {e}");
    }
    let mut extra = full.clone();
    extra.push(0);
    assert!(matches!(err(&extra), RDataError::TrailingBytes(1)));
}

#[test]
fn lengths_beyond_the_input_are_refused_before_allocating() {
    for len in [i32::MAX, 1 << 28] {
        let mut body = flags(16, false, false, 0).to_vec();
        body.extend(int(len));
        assert!(matches!(err(&ser(&body)), RDataError::BadLength { .. }), "STRSXP of {len}");
        let mut body = flags(14, false, false, 0).to_vec();
        body.extend(int(len));
        assert!(matches!(err(&ser(&body)), RDataError::BadLength { .. }), "REALSXP of {len}");
    }
    // A long length (-1, then 64 bits): 2^62 doubles.
    let mut body = flags(14, false, false, 0).to_vec();
    body.extend(int(-1));
    body.extend(int(1 << 30));
    body.extend(int(0));
    assert!(matches!(err(&ser(&body)), RDataError::BadLength { .. }));
    let mut body = flags(19, false, false, 0).to_vec();
    body.extend(int(-7));
    assert!(err(&ser(&body)).to_string().contains("negative length -7"));
    // A string longer than what is left.
    let mut body = flags(16, false, false, 0).to_vec();
    body.extend(int(1));
    body.extend(flags(9, false, false, 64));
    body.extend(int(1_000_000));
    body.extend(b"short");
    assert!(matches!(err(&ser(&body)), RDataError::Truncated { .. }));
}

#[test]
fn nesting_is_capped() {
    let depth = 10_000;
    let mut body = Vec::new();
    for _ in 0..depth {
        body.extend(flags(19, false, false, 0));
        body.extend(int(1));
    }
    body.extend(NIL);
    assert!(matches!(err(&ser(&body)), RDataError::TooDeep(64)));
    let shallow = Limits { max_depth: 3, ..Limits::default() };
    let mut body = Vec::new();
    for _ in 0..3 {
        body.extend(flags(19, false, false, 0));
        body.extend(int(1));
    }
    body.extend(NIL);
    parse(&ser(&body), &shallow).unwrap();
    body.splice(0..0, [flags(19, false, false, 0), int(1)].concat());
    assert!(matches!(parse(&ser(&body), &shallow), Err(RDataError::TooDeep(3))));
}

#[test]
fn unsupported_items_and_bad_references_are_named() {
    // A closure, an ALTREP compact sequence, an environment.
    for (ty, word) in [(3, "function"), (238, "compact"), (4, "environment")] {
        let e = err(&ser(&flags(ty, false, false, 0)));
        assert!(matches!(e, RDataError::Unsupported { .. }) && e.to_string().contains(word), "{e}");
    }
    // A tag that refers to symbol #5 when none has been read.
    let mut body = flags(2, false, true, 0).to_vec();
    body.extend(int((5 << 8) | 255));
    body.extend(strsxp(&["x"]));
    body.extend(NIL);
    assert!(matches!(err(&ser(&body)), RDataError::BadReference { index: 5, known: 0, .. }));
    // Invalid UTF-8 in a string flagged UTF-8.
    let mut body = flags(16, false, false, 0).to_vec();
    body.extend(int(1));
    body.extend(flags(9, false, false, 8));
    body.extend(int(2));
    body.extend([0xc3, 0x28]);
    assert!(matches!(err(&ser(&body)), RDataError::BadString { encoding: "UTF-8", .. }));
}

#[test]
fn blobs_check_their_zlib_stream_and_declared_length() {
    let limits = Limits::default();
    let payload = ser(&named_list());
    let blob = zlib(&payload);
    assert_eq!(decode_blob(&blob, Compression::Zlib, &limits).unwrap(), payload);
    // Truncated blob: shorter than its length prefix, or a zlib stream cut short.
    assert!(matches!(decode_blob(&blob[..3], Compression::Zlib, &limits), Err(RDataError::Truncated { .. })));
    let cut = decode_blob(&blob[..blob.len() / 2], Compression::Zlib, &limits).unwrap_err();
    assert!(matches!(cut, RDataError::Compression(_)), "{cut}");
    // Not zlib at all.
    let mut garbage = int(100).to_vec();
    garbage.extend(b"this is not a zlib stream");
    assert!(matches!(decode_blob(&garbage, Compression::Zlib, &limits), Err(RDataError::Compression(_))));
    // A header that lies about the size, either way.
    for declared in [payload.len() as i32 - 1, payload.len() as i32 + 1] {
        let mut lying = blob.clone();
        lying[..4].copy_from_slice(&int(declared));
        let e = decode_blob(&lying, Compression::Zlib, &limits).unwrap_err();
        assert!(e.to_string().contains("header says"), "{e}");
    }
    // A size over the limit is refused before inflating.
    let small = Limits { max_bytes: 16, ..limits };
    assert!(matches!(decode_blob(&blob, Compression::Zlib, &small), Err(RDataError::BadLength { .. })));
}

#[test]
fn no_single_byte_change_panics() {
    let payload = ser(&named_list());
    let blob = zlib(&payload);
    for (i, bit) in (0..payload.len()).flat_map(|i| [(i, 0x01u8), (i, 0x80)]) {
        let mut bad = payload.clone();
        bad[i] ^= bit;
        let _ = parse(&bad, &Limits::default());
    }
    for i in 0..blob.len() {
        let mut bad = blob.clone();
        bad[i] ^= 0xff;
        if let Ok(bytes) = decode_blob(&bad, Compression::Zlib, &Limits::default()) {
            let _ = parse(&bytes, &Limits::default());
        }
    }
}

/// A database on disk: a gzip'd index naming `x` at (offset, len), and an rdb file.
fn database(offset: i32, len: i32, rdb: &[u8], compressed: bool) -> (tempfile::TempDir, LazyLoadDb) {
    let mut index = flags(19, true, false, 0).to_vec();
    index.extend(int(3));
    // variables = list(x = c(offset, len))
    index.extend(flags(19, true, false, 0));
    index.extend(int(1));
    index.extend(flags(13, false, false, 0));
    index.extend(int(2));
    index.extend(int(offset));
    index.extend(int(len));
    index.extend(flags(2, false, true, 0));
    index.extend(symbol("names"));
    index.extend(strsxp(&["x"]));
    index.extend(NIL);
    // references = list(), compressed = TRUE / FALSE
    index.extend(flags(19, false, false, 0));
    index.extend(int(0));
    index.extend(flags(10, false, false, 0));
    index.extend(int(1));
    index.extend(int(compressed as i32));
    // names(index), the `names` symbol by reference (#1).
    index.extend(flags(2, false, true, 0));
    index.extend(int((1 << 8) | 255));
    index.extend(strsxp(&["variables", "references", "compressed"]));
    index.extend(NIL);
    let dir = tempfile::tempdir().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&ser(&index)).unwrap();
    std::fs::write(dir.path().join("Rdata.rdx"), gz.finish().unwrap()).unwrap();
    std::fs::write(dir.path().join("Rdata.rdb"), rdb).unwrap();
    let db = LazyLoadDb::open(&dir.path().join("Rdata.rdx"), &dir.path().join("Rdata.rdb")).unwrap();
    (dir, db)
}

#[test]
fn a_database_reads_its_blobs_and_refuses_entries_past_the_end() {
    let blob = zlib(&ser(&strsxp(&["It is a truth"])));
    let mut rdb = b"padding".to_vec();
    rdb.extend(&blob);
    let (_d, db) = database(7, blob.len() as i32, &rdb, true);
    assert_eq!((db.names(), db.compression()), (vec!["x"], Compression::Zlib));
    assert_eq!(db.read("x").unwrap().strings().unwrap(), &[Some("It is a truth".into())]);
    assert!(db.read("y").unwrap_err().to_string().contains("no variable `y`; it has x"));

    let (_d, db) = database(7, blob.len() as i32 + 1, &rdb, true);
    let e = db.read("x").unwrap_err().to_string();
    assert!(e.contains("Rdata.rdb") && e.contains("spans bytes 7..+"), "{e}");

    let plain = ser(&strsxp(&["plain"]));
    let (_d, db) = database(0, plain.len() as i32, &plain, false);
    assert_eq!(db.read("x").unwrap().strings().unwrap(), &[Some("plain".into())]);

    // An index that is not R data.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("Rdata.rdx"), [0x1f, 0x8b, 8, 0, 1, 2, 3]).unwrap();
    let e = LazyLoadDb::open(&dir.path().join("Rdata.rdx"), &dir.path().join("Rdata.rdb")).unwrap_err();
    assert!(e.to_string().contains("Rdata.rdx") && e.to_string().contains("gzip"), "{e}");
}
