//! Any text as an upstream address or NAME=ADDR route: an error or a value, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        // Host names would be resolved: keep to what needs no resolver.
        if text.chars().any(|c| c.is_ascii_alphabetic() && !"unixhtps".contains(c)) {
            return;
        }
        let _ = idlegate::address::Address::parse(text);
        let _ = idlegate::address::UpstreamSpec::parse(text);
    }
});
