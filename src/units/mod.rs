//! The systemd units for one config file, `/etc/idlegate/NAME.toml` (or
//! `~/.config/idlegate/NAME.toml` for a user's manager): `NAME.socket` (one
//! socket unit per named upstream), `NAME-control.socket` (the control
//! socket `idlegate inhibit` connects to), `NAME.service`, a drop-in for
//! the backend unit named in `[systemd]`, and with `awake` windows
//! `NAME-awake.timer` and `NAME-awake.service`. What [`generator`] writes at every
//! `daemon-reload`, and what `idlegate units FILE` prints.
//!
//! The units are what `deploy/` teaches by hand: `Type=notify`,
//! `ExecReload=`, the sandbox, `StartLimitIntervalSec=0`, the backend bound
//! with `BindsTo=` and ordered after idlegate, `RuntimeDirectory=` for
//! `idlegate status`.

mod awake;
pub mod generator;
mod render;

use std::path::{Path, PathBuf};

use crate::address::{Address, Names};
use crate::config::{Config, ConfigError};

/// Which service manager the units are for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// The system manager: files in `/etc/idlegate`, a sandboxed dynamic user.
    System,
    /// A user's manager (`systemctl --user`): files in `~/.config/idlegate`.
    User,
}

/// One file the generator writes, relative to its output directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnitFile {
    /// The path under the output directory, e.g. `tidings.socket` or
    /// `tidings-backend.service.d/50-idlegate.conf`.
    pub path: String,
    /// The file's text.
    pub text: String,
}

/// The units for one config file.
#[derive(Clone, Debug)]
pub struct Units {
    /// The unit files and drop-ins.
    pub files: Vec<UnitFile>,
    /// Socket units to link from `sockets.target.wants` (`enable = true`).
    pub wanted: Vec<String>,
    /// Timer units to link from `timers.target.wants` (`enable = true`
    /// with `awake` windows).
    pub timers: Vec<String>,
}

/// Why no units can be made for a file.
#[derive(Debug, thiserror::Error)]
pub enum UnitsError {
    /// The file is not a valid idlegate config file.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The file's name does not make a unit name.
    #[error("{}: the name of the file must be NAME.toml, where NAME.service is a unit name (letters, digits, '-', '_', '.', ':'; no '@')", .0.display())]
    Name(PathBuf),
    /// A socket's name does not make a unit name.
    #[error("{}: the socket name makes the unit name {unit}, which systemd does not take: name the socket with letters, digits, '-', '_' or '.'", path.display())]
    SocketName {
        /// The file.
        path: PathBuf,
        /// The unit name it would make.
        unit: String,
    },
    /// An upstream's socket has the control socket's name.
    #[error("{}: an upstream's socket is named control, the name of the control socket (idlegate inhibit): name it otherwise", .0.display())]
    ControlName(PathBuf),
    /// Nothing says where systemd listens.
    #[error("systemd.listen in {}: missing: say where systemd listens, one entry per upstream, e.g. [systemd] listen = [\"80\"]", .0.display())]
    NoListen(PathBuf),
    /// An unnamed upstream has several addresses.
    #[error("systemd.listen in {}: {upstream} takes one address; to give several, name the upstreams ([[upstream]] socket = \"NAME\")", path.display())]
    SeveralUnnamed {
        /// The file.
        path: PathBuf,
        /// The upstream.
        upstream: String,
    },
}

/// The name a file gives its units: `NAME` of `NAME.toml`.
pub fn unit_name(path: &Path) -> Result<String, UnitsError> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".toml"))
        .filter(|n| !n.contains('@') && crate::config::is_unit_name(&format!("{n}.service")))
        .ok_or_else(|| UnitsError::Name(path.to_owned()))?;
    Ok(name.to_owned())
}

/// One socket unit: its name, its `FileDescriptorName=`, and each address
/// with whether it is a datagram socket.
#[derive(Clone, Debug)]
struct SocketUnit {
    unit: String,
    fd_name: Option<String>,
    listen: Vec<(String, bool)>,
}

/// The units for the config file at `path`, run by the `idlegate` at `bin`.
pub fn for_file(path: &Path, scope: Scope, bin: &Path) -> Result<Units, UnitsError> {
    let name = unit_name(path)?;
    let config = Config::from_file_with(path, Names::Keep)?;
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    let systemd = config.systemd.clone().unwrap_or_default();
    let sockets = socket_units(&name, &path, &config, &systemd)?;
    let plan = render::Plan {
        name: &name,
        source: &path,
        bin,
        scope,
        config: &config,
        systemd: &systemd,
    };
    let mut files: Vec<UnitFile> = sockets
        .iter()
        .map(|s| UnitFile {
            path: s.unit.clone(),
            text: plan.socket(s.fd_name.as_deref(), &s.listen),
        })
        .collect();
    let control = format!("{name}-control.socket");
    files.push(UnitFile {
        path: control.clone(),
        text: plan.control_socket(),
    });
    let socket_names: Vec<&str> = sockets
        .iter()
        .map(|s| s.unit.as_str())
        .chain([control.as_str()])
        .collect();
    files.push(UnitFile {
        path: format!("{name}.service"),
        text: plan.service(&socket_names),
    });
    if let Some(backend) = &systemd.backend_unit {
        files.push(UnitFile {
            path: format!("{backend}.d/50-idlegate-{name}.conf"),
            text: plan.backend_drop_in(),
        });
    }
    let mut timers = Vec::new();
    if !systemd.awake.is_empty() {
        let timer = format!("{name}-awake.timer");
        files.push(UnitFile {
            path: timer.clone(),
            text: plan.awake_timer(),
        });
        files.push(UnitFile {
            path: format!("{name}-awake.service"),
            text: plan.awake_service(),
        });
        timers.push(timer);
    }
    let (wanted, timers) = if systemd.enable {
        (socket_names.iter().map(|s| s.to_string()).collect(), timers)
    } else {
        (Vec::new(), Vec::new())
    };
    Ok(Units {
        files,
        wanted,
        timers,
    })
}

/// The listen addresses of each upstream, from `[systemd] listen` or else
/// the file's own `listen`, grouped into socket units.
fn socket_units(
    name: &str,
    path: &Path,
    config: &Config,
    systemd: &crate::config::SystemdSettings,
) -> Result<Vec<SocketUnit>, UnitsError> {
    let upstreams = &config.sockets.upstreams;
    let listen: Vec<Vec<String>> = if !systemd.listen.is_empty() {
        systemd.listen.clone()
    } else if config.sockets.listen.len() == upstreams.len() {
        config
            .sockets
            .listen
            .iter()
            .map(|a| vec![systemd_address(a)])
            .collect()
    } else {
        return Err(UnitsError::NoListen(path.to_owned()));
    };
    let named = upstreams.iter().all(|u| u.socket_name.is_some());
    let mut units: Vec<SocketUnit> = Vec::new();
    for (i, (upstream, addresses)) in upstreams.iter().zip(listen).enumerate() {
        let datagram = upstream.address.is_udp();
        let listen = addresses.into_iter().map(|a| (a, datagram));
        if named {
            let fd_name = upstream.socket_name.clone();
            if fd_name.as_deref() == Some(crate::activation::CONTROL_NAME) {
                return Err(UnitsError::ControlName(path.to_owned()));
            }
            let unit = if i == 0 {
                format!("{name}.socket")
            } else {
                format!("{name}-{}.socket", fd_name.as_deref().unwrap_or_default())
            };
            if !crate::config::is_unit_name(&unit) || unit.contains('@') {
                return Err(UnitsError::SocketName {
                    path: path.to_owned(),
                    unit,
                });
            }
            units.push(SocketUnit {
                unit,
                fd_name,
                listen: listen.collect(),
            });
            continue;
        }
        let listen: Vec<(String, bool)> = listen.collect();
        if listen.len() != 1 {
            return Err(UnitsError::SeveralUnnamed {
                path: path.to_owned(),
                upstream: upstream.to_string(),
            });
        }
        match units.first_mut() {
            Some(unit) => unit.listen.extend(listen),
            None => units.push(SocketUnit {
                unit: format!("{name}.socket"),
                fd_name: None,
                listen,
            }),
        }
    }
    Ok(units)
}

/// An idlegate address as `ListenStream=`/`ListenDatagram=` takes it.
fn systemd_address(address: &Address) -> String {
    match address {
        Address::Tcp { text, .. } | Address::Udp { text, .. } => text.clone(),
        Address::Unix(path) => path.display().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn units_of(name: &str, text: &str, scope: Scope) -> Result<Units, UnitsError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        for_file(&path, scope, Path::new("/usr/bin/idlegate"))
    }

    fn text<'a>(units: &'a Units, path: &str) -> &'a str {
        &units.files.iter().find(|f| f.path == path).unwrap().text
    }

    #[test]
    fn unnamed_upstreams_share_one_socket_unit_in_their_order() {
        let units = units_of(
            "game.toml",
            "upstream = [\"127.0.0.1:7000\", \"udp:127.0.0.1:7001\"]\n[systemd]\nlisten = [\"7000\", \"7001\"]\n",
            Scope::System,
        )
        .unwrap();
        let paths: Vec<&str> = units.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            ["game.socket", "game-control.socket", "game.service"]
        );
        let socket = text(&units, "game.socket");
        let stream = socket.find("ListenStream=7000").unwrap();
        let datagram = socket.find("ListenDatagram=7001").unwrap();
        assert!(stream < datagram, "{socket}");
        assert!(!socket.contains("FileDescriptorName"), "{socket}");
        assert!(units.wanted.is_empty(), "not enabled unless asked");
    }

    #[test]
    fn an_unnamed_upstream_takes_one_address() {
        let e = units_of(
            "app.toml",
            "upstream = \"127.0.0.1:8080\"\n[systemd]\nlisten = [[\"0.0.0.0:80\", \"[::]:80\"]]\n",
            Scope::System,
        )
        .unwrap_err();
        assert!(e.to_string().contains("name the upstreams"), "{e}");
    }

    #[test]
    fn the_file_name_must_make_a_unit_name() {
        for name in ["a b.toml", "tpl@.toml", "x.conf"] {
            let e = units_of(
                name,
                "upstream = \"127.0.0.1:1\"\nlisten = \"127.0.0.1:2\"\n",
                Scope::System,
            )
            .unwrap_err();
            assert!(matches!(e, UnitsError::Name(_)), "{name}: {e}");
        }
    }

    #[test]
    fn the_files_own_listen_addresses_serve_when_there_is_no_systemd_table() {
        let units = units_of(
            "demo.toml",
            "upstream = \"127.0.0.1:8081\"\nlisten = \"127.0.0.1:8080\"\ncommand = [\"app\"]\n",
            Scope::System,
        )
        .unwrap();
        assert!(text(&units, "demo.socket").contains("ListenStream=127.0.0.1:8080"));
        let service = text(&units, "demo.service");
        assert!(service.contains("KillMode=mixed"), "{service}");
        assert!(service.contains("DynamicUser=yes"), "{service}");
    }

    /// The generator runs before any name service: a host name stays
    /// unresolved, and the service cannot be limited to its addresses.
    #[test]
    fn a_host_name_is_not_looked_up_and_lifts_the_address_limit() {
        let units = units_of(
            "nas.toml",
            "upstream = \"nas.invalid:80\"\n[systemd]\nlisten = [\"80\"]\nuser = \"nas\"\n",
            Scope::System,
        )
        .unwrap();
        let service = text(&units, "nas.service");
        assert!(!service.contains("IPAddressDeny=any"), "{service}");
        assert!(
            service.contains("nas.invalid:80 is a host name"),
            "{service}"
        );
        assert!(
            service.contains("User=nas") && !service.contains("DynamicUser"),
            "{service}"
        );
    }

    /// The sandbox lets out what idlegate sends: the magic packet goes to
    /// the Wake-on-LAN address (a broadcast), not to the upstream.
    #[test]
    fn the_wake_on_lan_address_is_allowed_out() {
        let units = units_of(
            "nas.toml",
            "upstream = \"192.168.77.20:8096\"\nwake-on-lan = \"52:54:00:12:34:56\"\n\
             wake-on-lan-address = \"192.168.77.255:9\"\n[systemd]\nlisten = [\"8096\"]\n",
            Scope::System,
        )
        .unwrap();
        let service = text(&units, "nas.service");
        assert!(
            service.contains("IPAddressAllow=localhost 192.168.77.20 192.168.77.255\n"),
            "{service}"
        );
    }

    /// A remote engine's address is let out too; a host name leaves the
    /// sandbox without `IPAddressDeny=`, as an upstream's does.
    #[test]
    fn a_remote_engine_is_allowed_out() {
        let service = |engine: &str| {
            let units = units_of(
                "nas.toml",
                &format!(
                    "upstream = \"192.168.77.20:2342\"\ncontainer = \"photos\"\n\
                     engine = \"{engine}\"\n[systemd]\nlisten = [\"2342\"]\n"
                ),
                Scope::System,
            )
            .unwrap();
            text(&units, "nas.service").to_owned()
        };
        let tcp = service("tcp://192.168.77.21:2376");
        assert!(
            tcp.contains("IPAddressAllow=localhost 192.168.77.20 192.168.77.21\n"),
            "{tcp}"
        );
        let ssh = service("ssh://idlegate@nas.lan");
        assert!(!ssh.contains("IPAddressDeny=any"), "{ssh}");
        assert!(ssh.contains("nas.lan is a host name"), "{ssh}");
    }

    #[test]
    fn a_user_service_has_no_privileged_settings() {
        let units = units_of(
            "app.toml",
            "upstream = \"127.0.0.1:8080\"\n[systemd]\nlisten = [\"8000\"]\nenable = true\n",
            Scope::User,
        )
        .unwrap();
        let service = text(&units, "app.service");
        for privileged in [
            "DynamicUser",
            "User=",
            "IPAddressDeny",
            "ProtectSystem",
            "PrivateUsers",
        ] {
            assert!(!service.contains(privileged), "{privileged}: {service}");
        }
        assert!(
            service.contains("RuntimeDirectory=idlegate/app"),
            "{service}"
        );
        assert!(text(&units, "app.socket").contains("systemctl --user daemon-reload"));
        assert_eq!(units.wanted, ["app.socket", "app-control.socket"]);
        // The user's runtime directory, beside the service's own in it.
        let control = text(&units, "app-control.socket");
        assert!(
            control.contains("\nListenStream=%t/idlegate/app.control\n"),
            "{control}"
        );
        assert!(control.contains("\nSocketMode=0600\n"), "{control}");
    }

    /// Every service gets a control socket, outside its runtime directory,
    /// root's only, and its own: the upstreams' `[systemd] socket` lines are
    /// not for it. (tests/integration/units.rs checks the units as a whole.)
    #[test]
    fn every_service_has_a_control_socket_of_its_own() {
        let units = units_of(
            "web.toml",
            "[[upstream]]\nsocket = \"http\"\naddress = \"127.0.0.1:8080\"\n[[upstream]]\nsocket = \"https\"\naddress = \"127.0.0.1:8443\"\n[systemd]\nlisten = [\"80\", \"443\"]\nsocket = [\"Backlog=4096\"]\n",
            Scope::System,
        )
        .unwrap();
        let control = text(&units, "web-control.socket");
        let socket_lines: Vec<&str> = control
            .lines()
            .skip_while(|l| *l != "[Socket]")
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        assert_eq!(
            socket_lines,
            [
                "[Socket]",
                "ListenStream=/run/idlegate/web.control",
                "FileDescriptorName=control",
                "Service=web.service",
                "SocketMode=0600",
            ]
        );
        assert!(text(&units, "web-https.socket").contains("\nBacklog=4096\n"));
        assert!(text(&units, "web.service")
            .contains("\nSockets=web.socket web-https.socket web-control.socket\n"));
        assert!(units.wanted.is_empty(), "not enabled unless asked");
    }

    /// A backend COMMAND of the system's manager runs as a dynamic user (or
    /// behind `ProtectHome=`): it gets a home and a state directory, unless
    /// the file's `[systemd] service` lines give their own. A container
    /// backend, or a user's manager (which has a home), gets none.
    #[test]
    fn a_command_backend_gets_a_home_and_a_state_directory() {
        let service = |text: &str, scope: Scope| {
            let units = units_of("hello.toml", text, scope).unwrap();
            let service = units.files.iter().find(|f| f.path == "hello.service");
            service.unwrap().text.clone()
        };
        let command = "upstream = \"127.0.0.1:8081\"\ncommand = [\"/usr/bin/caddy\", \"file-server\"]\n[systemd]\nlisten = [\"127.0.0.1:8080\"]\n";
        let home = |s: &str| {
            s.lines()
                .filter(|l| l.starts_with("StateDirectory=") || l.starts_with("Environment="))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            home(&service(command, Scope::System)),
            [
                "StateDirectory=idlegate/hello",
                "Environment=HOME=%S/idlegate/hello"
            ]
        );
        // The file's own state directory is the home.
        let own = format!("{command}service = [\"StateDirectory=hello-data:alias\"]\n");
        assert_eq!(
            home(&service(&own, Scope::System)),
            [
                "Environment=HOME=%S/hello-data",
                "StateDirectory=hello-data:alias"
            ]
        );
        // Its own HOME and state directory: nothing added.
        let both = format!(
            "{command}service = [\"StateDirectory=app\", \"Environment=XDG_DATA_HOME=/x HOME=%S/app\"]\n"
        );
        assert_eq!(
            home(&service(&both, Scope::System)),
            [
                "StateDirectory=app",
                "Environment=XDG_DATA_HOME=/x HOME=%S/app"
            ]
        );
        assert!(home(&service(command, Scope::User)).is_empty());
        let external = "upstream = \"127.0.0.1:8081\"\n[systemd]\nlisten = [\"8080\"]\n";
        assert!(home(&service(external, Scope::System)).is_empty());
    }

    /// An upstream's socket named `control` would be taken for the control
    /// socket (and its unit would be the control socket's).
    #[test]
    fn an_upstream_socket_may_not_be_named_control() {
        let e = units_of(
            "web.toml",
            "[[upstream]]\nsocket = \"http\"\naddress = \"127.0.0.1:8080\"\n[[upstream]]\nsocket = \"control\"\naddress = \"127.0.0.1:8443\"\n[systemd]\nlisten = [\"80\", \"443\"]\n",
            Scope::System,
        )
        .unwrap_err();
        assert!(matches!(e, UnitsError::ControlName(_)), "{e}");
    }
}
