//! Batch decoding never panics, and what it accepts re-encodes and decodes to the same batch.
#![no_main]

use crier_protocol::{DecodeLimits, decode_batch, encode_batch};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = DecodeLimits { max_messages: 1000, max_depth: 64 };
    if let Ok(batch) = decode_batch(data, &limits) {
        let again = encode_batch(&batch);
        let round = decode_batch(again.as_bytes(), &limits).expect("an encoded batch decodes");
        assert_eq!(round, batch);
        for m in &batch {
            // Typed accessors read whatever shapes came in without panicking.
            let _ = (m.channel(), m.client_id(), m.data(), m.subscription(), m.connection_type(), m.error());
        }
    }
});
