//! Fuzz target: splitting a logplex-1 body never panics, and every frame it returns is
//! within the limit and lies inside the body.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use logplex_proto::split_batch;

fuzz_target!(|data: &[u8]| {
    let [max, count, input @ ..] = data else { return };
    let body = Bytes::copy_from_slice(input);
    let expected = (*count != 255).then_some(usize::from(*count));
    if let Ok(frames) = split_batch(&body, usize::from(*max) * 4, expected) {
        let total: usize = frames.iter().map(|f| f.len()).sum();
        assert!(total <= body.len());
        assert!(frames.iter().all(|f| !f.is_empty() && f.len() <= usize::from(*max) * 4));
        if let Some(n) = expected {
            assert_eq!(frames.len(), n);
        }
    }
});
