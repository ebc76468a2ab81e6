//! `--wake-on-lan MAC` and `--wake-on-lan-address ADDR:PORT`: whom to wake
//! at each start, and where the packet goes (see
//! [`crate::backend::kinds::wake_on_lan`]).

use std::path::Path;

use super::super::file::FileConfig;
use crate::backend::kinds::wake_on_lan::{WakeOnLan, DEFAULT_ADDRESS};
use crate::cli::Cli;
use crate::config::ConfigError;

/// The host to wake, if any; an address without a MAC is an error.
pub(super) fn wake_on_lan(
    cli: &mut Cli,
    file: &mut FileConfig,
    path: &Path,
) -> Result<Option<WakeOnLan>, ConfigError> {
    let mac = given!(cli, file, path, wake_on_lan, "wake-on-lan");
    let address = given!(cli, file, path, wake_on_lan_address, "wake-on-lan-address");
    let address = match address {
        None => None,
        Some((text, origin)) => match text.trim().parse::<std::net::SocketAddr>() {
            Ok(a) if a.port() != 0 => Some(a),
            _ => {
                return Err(ConfigError::Invalid {
                    origin,
                    value: text,
                    reason: "expected IP:PORT with a port other than 0, such as 192.168.1.255:9"
                        .into(),
                })
            }
        },
    };
    let Some((text, origin)) = mac else {
        if address.is_some() {
            return Err(ConfigError::Usage(
                "--wake-on-lan-address needs --wake-on-lan MAC".into(),
            ));
        }
        return Ok(None);
    };
    let mac = text.parse().map_err(|reason| ConfigError::Invalid {
        origin,
        value: text,
        reason,
    })?;
    Ok(Some(WakeOnLan {
        mac,
        address: address.unwrap_or(DEFAULT_ADDRESS),
    }))
}

#[cfg(test)]
mod tests {
    use crate::cli::Cli;
    use crate::config::Config;

    /// The file's keys, a flag over its key, the default address, and the
    /// line `idlegate check` prints.
    #[test]
    fn the_file_keys_and_the_flags_name_the_host_and_the_address() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nas.toml");
        std::fs::write(
            &path,
            "upstream = \"192.168.1.20:445\"\nwake-on-lan = \"AA-BB-CC-DD-EE-0F\"\nwake-on-lan-address = \"192.168.1.255:9\"\n",
        )
        .unwrap();
        let from_file = |cli: Cli| {
            Config::from_cli(Cli {
                config: Some(path.clone()),
                ..cli
            })
            .unwrap()
        };
        let config = from_file(Cli::default());
        let wake = config.backend.wake_on_lan.clone().unwrap();
        assert_eq!(wake.mac.to_string(), "AA:BB:CC:DD:EE:0F");
        assert_eq!(wake.address.to_string(), "192.168.1.255:9");
        assert_eq!(config.backend_spec().wake_on_lan, Some(wake));
        assert!(
            config.summary().contains(
                "wake-on-lan: AA:BB:CC:DD:EE:0F through 192.168.1.255:9, at each start and every 3s until ready"
            ),
            "{}",
            config.summary()
        );

        let flagged = from_file(Cli {
            wake_on_lan: Some("aa:bb:cc:dd:ee:01".into()),
            ..Cli::default()
        });
        let wake = flagged.backend.wake_on_lan.unwrap();
        assert_eq!(wake.mac.to_string(), "AA:BB:CC:DD:EE:01");
        assert_eq!(wake.address.to_string(), "192.168.1.255:9");

        let defaulted = Config::from_cli(Cli {
            upstream: vec!["192.168.1.20:445".into()],
            wake_on_lan: Some("aa:bb:cc:dd:ee:01".into()),
            ..Cli::default()
        })
        .unwrap();
        let address = defaulted.backend.wake_on_lan.unwrap().address;
        assert_eq!(address.to_string(), "255.255.255.255:9");
    }
}
