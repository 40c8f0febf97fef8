use super::*;

fn run(strings: &[&[u8]]) -> Txt {
    parse("test.", strings.iter().copied())
}

fn attrs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn pairs() {
    let long_key = [b'k'; 64];
    let ok_key = [b'k'; 63];
    let long_string = [b'a'; 256];
    type Case<'a> = (&'a [u8], Result<Option<(&'a str, &'a str)>, Skip>);
    let cases: &[Case] = &[
        (b"", Ok(None)),
        (b"key=value", Ok(Some(("key", "value")))),
        (b"KeY=VaLuE", Ok(Some(("key", "VaLuE")))),
        (b"flag", Ok(Some(("flag", "")))),
        (b"flag=", Ok(Some(("flag", "")))),
        (b"a=b=c", Ok(Some(("a", "b=c")))),
        (b"sp ace=x", Ok(Some(("sp ace", "x")))),
        (b"=value", Err(Skip::MissingKey)),
        (b"=", Err(Skip::MissingKey)),
        (&long_key, Err(Skip::KeyTooLong)),
        (
            &ok_key,
            Ok(Some((std::str::from_utf8(&ok_key).unwrap(), ""))),
        ),
        (b"k\x01=v", Err(Skip::KeyNotPrintable)),
        (b"k\xff=v", Err(Skip::KeyNotPrintable)),
        (b"k=\xff\xfe", Err(Skip::ValueNotUtf8)),
        (b"k=caf\xc3\xa9", Ok(Some(("k", "caf\u{e9}")))),
        (&long_string, Err(Skip::StringTooLong)),
    ];
    for (input, want) in cases {
        let got = parse_pair(input);
        let want = want.map(|o| o.map(|(k, v)| (k.to_owned(), v.to_owned())));
        assert_eq!(got, want, "{:?}", String::from_utf8_lossy(input));
    }
}

#[test]
fn records() {
    struct Case {
        strings: &'static [&'static [u8]],
        zone: Option<&'static str>,
        attributes: &'static [(&'static str, &'static str)],
    }
    let cases = [
        Case {
            strings: &[b""],
            zone: None,
            attributes: &[],
        },
        Case {
            strings: &[b"zone=eu-1", b"health=/healthz"],
            zone: Some("eu-1"),
            attributes: &[("health", "/healthz")],
        },
        Case {
            // first occurrence wins, keys case-insensitive
            strings: &[b"Zone=a", b"zone=b", b"K=1", b"k=2"],
            zone: Some("a"),
            attributes: &[("k", "1")],
        },
        Case {
            // malformed strings are skipped, the rest kept
            strings: &[b"=x", b"k\x00=1", b"good=1", b"v=\xff", b"tls"],
            zone: None,
            attributes: &[("good", "1"), ("tls", "")],
        },
        Case {
            // empty zone is not a zone
            strings: &[b"zone=", b"zone=late"],
            zone: None,
            attributes: &[],
        },
        Case {
            strings: &[b"zone"],
            zone: None,
            attributes: &[],
        },
    ];
    for case in cases {
        let txt = run(case.strings);
        assert_eq!(txt.zone.as_deref(), case.zone, "{:?}", case.strings);
        assert_eq!(txt.attributes, attrs(case.attributes), "{:?}", case.strings);
    }
}

#[test]
fn oversized_records_are_cut_not_rejected() {
    let strings: Vec<Vec<u8>> = (0..200).map(|i| format!("key{i}=v").into_bytes()).collect();
    let txt = parse("big.", strings.iter().map(Vec::as_slice));
    assert_eq!(txt.attributes.len(), MAX_ATTRIBUTES);

    let fat: Vec<Vec<u8>> = (0..100)
        .map(|i| format!("k{i}={}", "x".repeat(200)).into_bytes())
        .collect();
    let txt = parse("fat.", fat.iter().map(Vec::as_slice));
    assert!(txt.attributes.len() < 100);
    let kept: usize = txt
        .attributes
        .iter()
        .map(|(k, v)| k.len() + v.len() + 2)
        .sum();
    assert!(kept <= MAX_RECORD_LEN);
}

#[test]
fn arbitrary_bytes_never_panic() {
    // A cheap deterministic sweep over short byte strings.
    let mut state = 0x2545_f491_u32;
    for _ in 0..5_000 {
        let len = (state % 40) as usize;
        let mut s = Vec::with_capacity(len);
        for _ in 0..len {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            s.push((state & 0xff) as u8);
        }
        let _ = run(&[&s, b"x=y"]);
    }
}

#[test]
fn encode_round_trips() {
    let txt = Txt {
        zone: Some("eu-1".into()),
        attributes: attrs(&[("health", "/healthz"), ("tls", "")]),
    };
    let strings = encode(&txt);
    assert_eq!(strings, ["zone=eu-1", "health=/healthz", "tls"]);
    let back = parse("x.", strings.iter().map(|s| s.as_bytes()));
    assert_eq!(back, txt);
}
