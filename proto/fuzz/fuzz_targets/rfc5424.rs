//! Fuzz target: the strict and lenient RFC 5424 parsers never panic, and whatever strict
//! accepts lenient accepts with the same header.
#![no_main]

use libfuzzer_sys::fuzz_target;
use logplex_proto::{parse, parse_lenient};

fuzz_target!(|data: &[u8]| {
    let strict = parse(data);
    let lenient = parse_lenient(data);
    if let Ok(s) = strict {
        let l = lenient.expect("lenient accepts what strict accepts");
        assert_eq!(
            (s.pri, s.version, s.timestamp, s.hostname, s.app_name, s.procid, s.msgid),
            (l.pri, l.version, l.timestamp, l.hostname, l.app_name, l.procid, l.msgid)
        );
    }
    if let Err(e) = parse_lenient(data) {
        assert!(e.offset <= data.len());
    }
});
