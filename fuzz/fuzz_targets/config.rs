//! Any bytes as a config file, read and validated in full: an error on one
//! line or a config, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // A host name in an address is resolved, as at start; a failing lookup
    // takes milliseconds here. One file per process, rewritten each run.
    let path = std::env::temp_dir().join(format!("idlegate-fuzz-{}.toml", std::process::id()));
    std::fs::write(&path, data).unwrap();
    let cli = idlegate::cli::Cli {
        config: Some(path),
        ..Default::default()
    };
    if let Err(e) = idlegate::Config::from_cli(cli) {
        assert!(!e.to_string().contains('\n'), "one line: {e}");
    }
});
