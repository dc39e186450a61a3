//! PEM files the configuration names: read and checked the same way by
//! `check` and by `serve`, so that `check` refuses a file `serve` cannot
//! use.

use std::path::Path;

/// The certificates in a PEM file, as DER, each one checked to parse
/// (the TLS layer's own parser panics on bad DER). An error when the file
/// cannot be read, is not PEM, or holds no certificate.
pub fn certificates(path: &Path) -> Result<Vec<Vec<u8>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut reader = pem.as_slice();
    let mut out = Vec::new();
    for item in rustls_pemfile::certs(&mut reader) {
        let der = item.map_err(|e| format!("{}: bad PEM: {e}", path.display()))?;
        x509_parser::parse_x509_certificate(der.as_ref())
            .map_err(|e| format!("{}: bad certificate: {e}", path.display()))?;
        out.push(der.as_ref().to_vec());
    }
    if out.is_empty() {
        return Err(format!("{} holds no certificate", path.display()));
    }
    Ok(out)
}

/// Checks that a PEM file holds a private key.
pub fn private_key(path: &Path) -> Result<(), String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    match rustls_pemfile::private_key(&mut pem.as_slice()) {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(format!("{} holds no private key", path.display())),
        Err(e) => Err(format!("{}: bad PEM: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_no_certificate_and_no_key() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("garbage.pem");
        std::fs::write(&path, "not a certificate\n").expect("write");
        assert!(certificates(&path).is_err());
        assert!(private_key(&path).is_err());
        let broken = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        std::fs::write(&path, broken).expect("write");
        assert!(certificates(&path).is_err());
    }
}
