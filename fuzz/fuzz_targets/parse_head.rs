//! Fuzz target: the request-head scanner and parser, fed whole and in pieces.
//! Input layout and assertions: `minigun_fuzz::check_head_input`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| minigun_fuzz::check_head_input(data));
