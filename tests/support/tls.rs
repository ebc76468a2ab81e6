//! Certificates for the TLS engine tests, made with `openssl` as Docker's
//! guide makes them: a CA, a server certificate for 127.0.0.1
//! (`subjectAltName = IP:127.0.0.1`), a client certificate, and a second CA
//! with a client certificate the engine must refuse.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The files of one test run's TLS setup.
#[derive(Debug)]
pub struct Certs {
    /// The engine's side: `ca.pem`, `server-cert.pem`, `server-key.pem`.
    pub server: PathBuf,
    /// A client directory the engine accepts (Docker's names: `ca.pem`,
    /// `cert.pem`, `key.pem`).
    pub client: PathBuf,
    /// A client directory whose certificate another CA signed.
    pub stranger: PathBuf,
}

fn openssl(args: &[&str], dir: &Path) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA (`ca.pem`, `ca-key.pem`) in `dir`.
fn ca(dir: &Path, name: &str) {
    std::fs::create_dir_all(dir).unwrap();
    openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "ca-key.pem",
            "-out",
            "ca.pem",
            "-days",
            "3",
            "-subj",
            &format!("/CN={name}"),
        ],
        dir,
    );
}

/// `cert`/`key` in `out`, signed by the CA in `ca_dir`, with extensions `ext`.
fn signed(ca_dir: &Path, out: &Path, cert: &str, key: &str, cn: &str, ext: &str) {
    std::fs::create_dir_all(out).unwrap();
    let ext_file = out.join(format!("{cert}.ext"));
    std::fs::write(&ext_file, ext).unwrap();
    let csr = out.join(format!("{cert}.csr"));
    openssl(
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            key,
            "-out",
            csr.to_str().unwrap(),
            "-subj",
            &format!("/CN={cn}"),
        ],
        out,
    );
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            csr.to_str().unwrap(),
            "-CA",
            ca_dir.join("ca.pem").to_str().unwrap(),
            "-CAkey",
            ca_dir.join("ca-key.pem").to_str().unwrap(),
            "-CAcreateserial",
            "-out",
            cert,
            "-days",
            "3",
            "-extfile",
            ext_file.to_str().unwrap(),
        ],
        out,
    );
}

/// Makes the certificates under `dir`.
pub fn make(dir: &Path) -> Certs {
    let server = dir.join("server");
    let client = dir.join("client");
    let stranger = dir.join("stranger");
    let other_ca = dir.join("other-ca");
    ca(&server, "idlegate-test-ca");
    ca(&other_ca, "idlegate-test-other-ca");
    signed(
        &server,
        &server,
        "server-cert.pem",
        "server-key.pem",
        "127.0.0.1",
        "subjectAltName = IP:127.0.0.1\nextendedKeyUsage = serverAuth\n",
    );
    let client_ext = "extendedKeyUsage = clientAuth\n";
    signed(
        &server, &client, "cert.pem", "key.pem", "client", client_ext,
    );
    signed(
        &other_ca, &stranger, "cert.pem", "key.pem", "client", client_ext,
    );
    std::fs::copy(server.join("ca.pem"), client.join("ca.pem")).unwrap();
    // The stranger trusts the engine; the engine does not trust it.
    std::fs::copy(server.join("ca.pem"), stranger.join("ca.pem")).unwrap();
    Certs {
        server,
        client,
        stranger,
    }
}
