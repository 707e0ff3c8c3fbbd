//! Inputs found by the fuzzers (`scripts/fuzz`), kept so their bugs stay fixed.

use crier_protocol::{DecodeLimits, decode_batch, encode_batch};

fn round_trips(input: &[u8]) {
    let limits = DecodeLimits { max_messages: 1000, max_depth: 64 };
    let batch = decode_batch(input, &limits).expect("decodes");
    let again = decode_batch(encode_batch(&batch).as_bytes(), &limits).expect("re-decodes");
    assert_eq!(again, batch, "a relayed batch is the batch that came in");
}

/// A number whose shortest re-encoding parsed back to a neighbouring float: without
/// correctly rounded parsing (serde_json `float_roundtrip`), a published number could reach
/// subscribers changed in its last digit.
#[test]
fn numbers_survive_relaying_unchanged() {
    round_trips(include_bytes!("fuzz-float-roundtrip.json"));
    round_trips(
        br#"{"channel":"/n","data":[0.1,1e308,-2.2250738585072014e-308,5e-324,123456789012345678901234567890]}"#,
    );
}
