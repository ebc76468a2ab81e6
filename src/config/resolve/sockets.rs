//! The sockets and their upstreams: `--upstream` (or the positional, or the
//! file's `upstream`), `--mode`, `--proxy-protocol`, `--listen`,
//! `--connections-max`.

use std::path::Path;

use super::super::file::{FileConfig, RawUpstream, Upstreams};
use super::{address_setting, count_setting, file_origin, list_setting};
use crate::address::Mode;
use crate::address::{Address, Names, ProxyProtocolVersion, UpstreamProtocol, UpstreamSpec};
use crate::cli::Cli;
use crate::config::{ConfigError, Origin, Sockets, DEFAULT_CONNECTIONS_MAX};

/// The sockets: where traffic goes, what to bind when not activated, how
/// many connections at once.
pub(in crate::config) fn sockets(
    cli: &mut Cli,
    file: &mut FileConfig,
    path: &Path,
    names: Names,
) -> Result<Sockets, ConfigError> {
    let upstreams = upstreams(cli, file, path, names)?;
    let listen_texts = list_setting(
        std::mem::take(&mut cli.listen),
        "--listen",
        file.listen.take(),
        "listen",
        path,
    );
    let listen = listen_texts
        .into_iter()
        .map(|(t, o)| address_setting(t, o, names))
        .collect::<Result<Vec<_>, _>>()?;

    let connections_max = count_setting(
        given!(cli, file, path, connections_max, "connections-max", |n| n
            .to_string()),
        DEFAULT_CONNECTIONS_MAX,
    )?;
    Ok(Sockets {
        upstreams,
        listen,
        connections_max,
    })
}

fn proxy_version(text: String, origin: Origin) -> Result<ProxyProtocolVersion, ConfigError> {
    text.parse().map_err(|reason| ConfigError::Invalid {
        origin,
        value: text,
        reason,
    })
}

/// What an upstream gets when it says nothing of its own.
struct UpstreamDefaults {
    mode: Mode,
    proxy_protocol: Option<ProxyProtocolVersion>,
    protocol: UpstreamProtocol,
    names: Names,
}

fn upstream_protocol(text: String, origin: Origin) -> Result<UpstreamProtocol, ConfigError> {
    text.parse().map_err(|reason| ConfigError::Invalid {
        origin,
        value: text,
        reason,
    })
}

impl UpstreamDefaults {
    /// The mode of `address`: UDP is forwarded datagram by datagram whatever
    /// the mode.
    fn mode_for(&self, address: &Address) -> Mode {
        if address.is_udp() {
            Mode::Tcp
        } else {
            self.mode
        }
    }
}

/// An `[[upstream]]` table of the file.
fn upstream_table(
    t: super::super::file::UpstreamTable,
    defaults: &UpstreamDefaults,
    path: &Path,
) -> Result<UpstreamSpec, ConfigError> {
    let origin = file_origin("upstream", path);
    let address =
        Address::parse_with(&t.address, defaults.names).map_err(|e| ConfigError::Invalid {
            origin: origin.clone(),
            value: t.address.clone(),
            reason: e.to_string(),
        })?;
    let mode = match t.mode {
        None => defaults.mode_for(&address),
        Some(m) => match m.parse() {
            Ok(Mode::Http) if address.is_udp() => {
                return Err(ConfigError::Invalid {
                    origin: file_origin("upstream.mode", path),
                    value: m,
                    reason: format!("{address} is UDP, forwarded datagram by datagram: HTTP mode is for stream upstreams"),
                })
            }
            Ok(mode) => mode,
            Err(reason) => {
                return Err(ConfigError::Invalid {
                    origin: file_origin("upstream.mode", path),
                    value: m,
                    reason,
                })
            }
        },
    };
    if let Some(name) = &t.socket {
        if name.is_empty() || name.contains(':') {
            return Err(ConfigError::Invalid {
                origin: file_origin("upstream.socket", path),
                value: name.clone(),
                reason: "a socket name is a FileDescriptorName= value: not empty, no ':'".into(),
            });
        }
    }
    let proxy_protocol = match t.proxy_protocol {
        None => defaults.proxy_protocol,
        Some(v) => Some(proxy_version(
            v,
            file_origin("upstream.proxy-protocol", path),
        )?),
    };
    let protocol = match t.protocol {
        None => defaults.protocol,
        Some(p) => upstream_protocol(p, file_origin("upstream.protocol", path))?,
    };
    Ok(UpstreamSpec {
        socket_name: t.socket,
        address,
        mode,
        proxy_protocol,
        protocol,
    })
}

/// The upstreams, from `--upstream` flags, else systemd-socket-proxyd's
/// positional, else the file; with their modes and PROXY protocol versions.
fn upstreams(
    cli: &mut Cli,
    file: &mut FileConfig,
    path: &Path,
    names: Names,
) -> Result<Vec<UpstreamSpec>, ConfigError> {
    let default_mode = match given!(cli, file, path, mode, "mode") {
        None => Mode::Tcp,
        Some((text, origin)) => text.parse().map_err(|reason| ConfigError::Invalid {
            origin,
            value: text,
            reason,
        })?,
    };
    let default_proxy_protocol = given!(cli, file, path, proxy_protocol, "proxy-protocol")
        .map(|(text, origin)| proxy_version(text, origin))
        .transpose()?;
    let default_protocol = given!(cli, file, path, upstream_protocol, "upstream-protocol")
        .map(|(text, origin)| upstream_protocol(text, origin))
        .transpose()?
        .unwrap_or_default();
    // Upstreams: --upstream flags, else systemd-socket-proxyd's positional, else the file.
    if cli.positional_upstream.is_some() && !cli.upstream.is_empty() {
        return Err(ConfigError::Usage(
            "give the upstream either as --upstream or as the positional UPSTREAM, not both".into(),
        ));
    }
    let defaults = UpstreamDefaults {
        mode: default_mode,
        proxy_protocol: default_proxy_protocol,
        protocol: default_protocol,
        names,
    };
    let parse_text = |text: String, origin: Origin| {
        UpstreamSpec::parse_with(&text, defaults.names)
            .map(|spec| UpstreamSpec {
                mode: defaults.mode_for(&spec.address),
                proxy_protocol: defaults.proxy_protocol,
                protocol: defaults.protocol,
                ..spec
            })
            .map_err(|e| ConfigError::Invalid {
                origin,
                value: text,
                reason: e.to_string(),
            })
    };
    let mut upstreams = Vec::new();
    if let Some(p) = cli.positional_upstream.take() {
        upstreams.push(parse_text(p, Origin::Flag("UPSTREAM"))?);
    } else if !cli.upstream.is_empty() {
        for u in std::mem::take(&mut cli.upstream) {
            upstreams.push(parse_text(u, Origin::Flag("--upstream"))?);
        }
    } else if let Some(entries) = file.upstream.take() {
        let entries = match entries {
            Upstreams::One(one) => vec![one],
            Upstreams::Many(many) => many,
        };
        for entry in entries {
            let origin = file_origin("upstream", path);
            upstreams.push(match entry {
                RawUpstream::Text(text) => parse_text(text, origin)?,
                RawUpstream::Table(t) => upstream_table(t, &defaults, path)?,
            });
        }
    }
    check_upstreams(&upstreams)?;
    Ok(upstreams)
}

/// What must hold of the upstreams together.
fn check_upstreams(upstreams: &[UpstreamSpec]) -> Result<(), ConfigError> {
    if let Some(u) = upstreams
        .iter()
        .find(|u| u.proxy_protocol.is_some() && u.mode == Mode::Http)
    {
        return Err(ConfigError::Usage(format!(
            "--proxy-protocol/proxy-protocol is for TCP mode; the HTTP mode upstream {} gets X-Forwarded-For instead",
            u.address
        )));
    }
    if let Some(u) = upstreams
        .iter()
        .find(|u| u.address.is_udp() && u.proxy_protocol == Some(ProxyProtocolVersion::V1))
    {
        return Err(ConfigError::Usage(format!(
            "--proxy-protocol/proxy-protocol v1 has no UDP form; the UDP upstream {} needs v2",
            u.address
        )));
    }
    if let Some(u) = upstreams
        .iter()
        .find(|u| u.protocol == UpstreamProtocol::H2c && u.mode != Mode::Http)
    {
        return Err(ConfigError::Usage(format!(
            "--upstream-protocol/upstream-protocol h2c is for HTTP mode (--mode http); the upstream {} is forwarded as {}",
            u.address,
            if u.address.is_udp() { "UDP datagrams" } else { "a TCP byte stream" }
        )));
    }
    if upstreams.is_empty() {
        return Err(ConfigError::Usage(
            "--upstream: missing: say where traffic goes, e.g. --upstream 127.0.0.1:8080".into(),
        ));
    }
    let named = upstreams.iter().filter(|u| u.socket_name.is_some()).count();
    if named != 0 && named != upstreams.len() {
        return Err(ConfigError::Usage(
            "--upstream: either every upstream is NAME=ADDR or none is (mixing names and positions is ambiguous)".into(),
        ));
    }
    Ok(())
}
