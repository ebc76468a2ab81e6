//! The units of `[systemd] awake`: `NAME-awake.timer`, which fires at each
//! window's start (and once when it starts, at boot say, for a window in
//! progress), and `NAME-awake.service`, which runs `idlegate inhibit
//! --during WINDOW…` on the control socket: connecting wakes idlegate, and
//! the hold lasts to the window's end. Outside every window it exits at once,
//! so firing at other times is harmless.

use std::fmt::Write;

use super::render::{quote, Plan};
use super::Scope;

/// What the awake service needs: the control socket's file and nothing
/// else. It runs as root (the socket is root's, mode 0600), with no
/// capabilities and a read-only system.
const SYSTEM_SANDBOX: &[&str] = &[
    "NoNewPrivileges=yes",
    "CapabilityBoundingSet=",
    "ProtectSystem=strict",
    "ProtectHome=yes",
    "PrivateTmp=yes",
    "PrivateDevices=yes",
    "PrivateNetwork=yes",
    "PrivateUsers=yes",
    "PrivateMounts=yes",
    "ProtectHostname=yes",
    "ProtectClock=yes",
    "ProtectKernelTunables=yes",
    "ProtectKernelModules=yes",
    "ProtectKernelLogs=yes",
    "ProtectControlGroups=yes",
    "ProtectProc=invisible",
    "ProcSubset=pid",
    "IPAddressDeny=any",
    "RestrictAddressFamilies=AF_UNIX",
    "RestrictNamespaces=yes",
    "RestrictRealtime=yes",
    "RestrictSUIDSGID=yes",
    "LockPersonality=yes",
    "MemoryDenyWriteExecute=yes",
    "SystemCallArchitectures=native",
    "SystemCallFilter=@system-service",
    "SystemCallFilter=~@privileged @resources",
    "SystemCallErrorNumber=EPERM",
    "UMask=0077",
];

/// What a user's manager can apply without privileges.
const USER_SANDBOX: &[&str] = &[
    "NoNewPrivileges=yes",
    "LockPersonality=yes",
    "SystemCallArchitectures=native",
    "SystemCallFilter=@system-service",
];

/// How long the awake service waits before it tries again when the hold
/// failed (the backend did not start, idlegate went away in the window).
const RETRY: &str = "30s";

impl Plan<'_> {
    /// `NAME-awake.timer`: each window's start.
    pub fn awake_timer(&self) -> String {
        let mut out = self.awake_unit("awake at set hours");
        let _ = writeln!(out, "\n[Timer]");
        for window in &self.systemd.awake {
            let _ = writeln!(out, "# {window}");
            let _ = writeln!(out, "OnCalendar={}", window.on_calendar());
        }
        let _ = writeln!(
            out,
            "# At once when the timer starts (at boot, say): a window in progress is held to its end; outside every window the service exits at once."
        );
        let _ = writeln!(out, "OnActiveSec=0");
        let _ = writeln!(out, "AccuracySec=1s");
        let _ = writeln!(out, "Unit={}-awake.service", self.name);
        out
    }

    /// `NAME-awake.service`: holds the service awake to the window's end.
    pub fn awake_service(&self) -> String {
        let control = format!("{}-control.socket", self.name);
        let mut out = self.awake_unit("held awake in its windows");
        let _ = writeln!(out, "Requires={control}\nAfter={control}");
        let _ = writeln!(out, "\n[Service]");
        let _ = writeln!(out, "Type=exec");
        let mut exec = format!(
            "ExecStart={} inhibit --control {} --why {}",
            quote(&self.bin.display().to_string()),
            self.control_path(),
            quote("awake at set hours"),
        );
        for window in &self.systemd.awake {
            let _ = write!(exec, " --during {}", quote(&window.to_string()));
        }
        let _ = writeln!(out, "{exec}");
        let _ = writeln!(
            out,
            "# The backend failed to start, or idlegate went away inside the window: again, as long as it lasts."
        );
        let _ = writeln!(out, "Restart=on-failure\nRestartSec={RETRY}");
        let sandbox = match self.scope {
            Scope::System => SYSTEM_SANDBOX,
            Scope::User => USER_SANDBOX,
        };
        for line in sandbox {
            let _ = writeln!(out, "{line}");
        }
        out
    }

    /// The header and the `[Unit]` lines of an awake unit up to its own.
    fn awake_unit(&self, what: &str) -> String {
        let mut out = String::new();
        self.header(&mut out);
        let _ = writeln!(out, "[Unit]");
        let _ = writeln!(out, "Description=idlegate {}: {what}", self.name);
        let _ = writeln!(out, "SourcePath={}", self.source.display());
        out
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::units::{for_file, Scope, Units};

    fn units_of(text: &str, scope: Scope) -> Result<Units, crate::units::UnitsError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("office.toml");
        std::fs::write(&path, text).unwrap();
        for_file(&path, scope, Path::new("/usr/bin/idlegate"))
    }

    fn lines<'a>(units: &'a Units, path: &str, section: &str) -> Vec<&'a str> {
        let text = &units.files.iter().find(|f| f.path == path).unwrap().text;
        text.lines()
            .skip_while(|l| *l != section)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect()
    }

    const OFFICE: &str = "upstream = \"127.0.0.1:8080\"\n[systemd]\nlisten = [\"80\"]\nawake = [\"Mon..Fri 07:55..18:00\", \"Sat 22:00..02:00\"]\n";

    /// The timer fires at each window's start and when it starts; the
    /// service holds the control socket through the windows as written.
    #[test]
    fn awake_windows_make_a_timer_and_a_service_that_holds() {
        let units = units_of(OFFICE, Scope::System).unwrap();
        assert_eq!(
            lines(&units, "office-awake.timer", "[Timer]"),
            [
                "[Timer]",
                "OnCalendar=Mon..Fri *-*-* 07:55:00",
                "OnCalendar=Sat *-*-* 22:00:00",
                "OnActiveSec=0",
                "AccuracySec=1s",
                "Unit=office-awake.service",
            ]
        );
        let unit = lines(&units, "office-awake.service", "[Unit]");
        assert!(unit.contains(&"Requires=office-control.socket"), "{unit:?}");
        assert!(unit.contains(&"After=office-control.socket"), "{unit:?}");
        let service = lines(&units, "office-awake.service", "[Service]");
        assert_eq!(
            service[..5],
            [
                "[Service]",
                "Type=exec",
                "ExecStart=/usr/bin/idlegate inhibit --control /run/idlegate/office.control --why \"awake at set hours\" --during \"Mon..Fri 07:55..18:00\" --during \"Sat 22:00..02:00\"",
                "Restart=on-failure",
                "RestartSec=30s",
            ]
        );
        assert!(service.contains(&"ProtectSystem=strict"), "{service:?}");
        assert!(units.timers.is_empty(), "not enabled unless asked");
        // No windows, no timer.
        let plain = units_of(
            "upstream = \"127.0.0.1:8080\"\n[systemd]\nlisten = [\"80\"]\n",
            Scope::System,
        )
        .unwrap();
        assert!(!plain.files.iter().any(|f| f.path.contains("awake")));
    }

    /// `enable = true` starts the timer at boot; a user's service reaches
    /// its control socket in the user's runtime directory.
    #[test]
    fn an_enabled_users_timer_is_wanted_by_timers_target() {
        let units = units_of(&format!("{OFFICE}enable = true\n"), Scope::User).unwrap();
        assert_eq!(units.timers, ["office-awake.timer"]);
        let service = lines(&units, "office-awake.service", "[Service]");
        assert!(
            service[2].contains(" inhibit --control %t/idlegate/office.control "),
            "{service:?}"
        );
        assert!(!service.contains(&"ProtectSystem=strict"), "{service:?}");
    }

    /// A bad window is the file's error, naming the key and the value.
    #[test]
    fn a_bad_window_names_the_key_and_the_value() {
        let e = units_of(
            "upstream = \"127.0.0.1:8080\"\n[systemd]\nlisten = [\"80\"]\nawake = [\"Mon..Fri 8:00\"]\n",
            Scope::System,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("systemd.awake"), "{e}");
        assert!(e.contains("Mon..Fri 8:00"), "{e}");
        assert!(e.contains("START..END"), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }
}
