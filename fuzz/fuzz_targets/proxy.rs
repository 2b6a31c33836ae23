//! Fuzz target: the PROXY protocol header parser (`--proxy-protocol`), fed whole and in
//! pieces, and the `--proxy-allow-from` list parser. Input layout and assertions:
//! `minigun_fuzz::check_proxy_input`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| minigun_fuzz::check_proxy_input(data));
