//! Fuzz target: logfmt pairs, unescaping, predicates and comparisons never panic and always
//! make progress.
#![no_main]

use libfuzzer_sys::fuzz_target;
use logplex_proto::logfmt::{compare, get, pairs, parse_predicate, CmpOp};

fuzz_target!(|data: &[u8]| {
    let mut n = 0;
    for (k, v) in pairs(data) {
        assert!(!k.is_empty());
        n += 1;
        assert!(n <= data.len());
        let u = v.unescape();
        assert!(u.len() <= v.raw.len());
        let _ = v.as_f64();
        for op in [CmpOp::Eq, CmpOp::Ne, CmpOp::Lt, CmpOp::Le, CmpOp::Gt, CmpOp::Ge] {
            let _ = compare(&v, op, b"500");
            let _ = compare(&v, op, k);
        }
    }
    let _ = get(data, b"status");
    if let Ok(terms) = parse_predicate(data) {
        for t in terms {
            assert!(!t.key.is_empty());
            assert_eq!(CmpOp::parse(t.op.as_str().as_bytes()), Some(t.op));
        }
    }
});
