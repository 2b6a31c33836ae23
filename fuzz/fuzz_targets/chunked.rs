//! Fuzz target: the chunked body decoder, fed whole and in pieces, against a reference decoder.
//! Input layout and assertions: `minigun_fuzz::check_chunked_input`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| minigun_fuzz::check_chunked_input(data));
