//! The signing key and certificate chain, and how a workload certificate is made from a CSR.
//!
//! Key material comes in the layouts Istio uses, so workloads of a running Istio keep trusting
//! what meshpilot signs after the switch:
//! - *plugged-in CA* (`cacerts`): `ca-cert.pem`, `ca-key.pem`, `root-cert.pem`, `cert-chain.pem`;
//! - *self-signed CA* (`istio-ca-secret`): `ca-cert.pem` and `ca-key.pem`, the certificate being
//!   its own root.
//!
//! An empty (or missing) directory gets a new self-signed root written into it, so a restart signs
//! with the same key. A directory holding only part of a layout is an error: generating a new
//! root over it would silently break trust with every workload holding the old one.

use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber, SubjectPublicKeyInfo,
};
use time::OffsetDateTime;
use x509_parser::prelude::FromDer;

use crate::identity::SpiffeId;
use crate::keys;

/// Istio's file names, in a `cacerts` directory or the `istio-ca-secret` Secret.
pub const CA_CERT: &str = "ca-cert.pem";
pub const CA_KEY: &str = "ca-key.pem";
pub const ROOT_CERT: &str = "root-cert.pem";
pub const CERT_CHAIN: &str = "cert-chain.pem";

/// Workload certificates live this long unless the request asks otherwise (Istio's
/// `DEFAULT_WORKLOAD_CERT_TTL`).
pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);
/// And never longer than this (Istio's `MAX_WORKLOAD_CERT_TTL`).
pub const MAX_TTL: Duration = Duration::from_secs(90 * 24 * 3600);
/// A self-signed root lives ten years (Istio's `CITADEL_SELF_SIGNED_CA_CERT_TTL`).
const ROOT_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Certificates start this far in the past, so a peer whose clock runs a little behind accepts
/// them at once (Istio's `ClockSkewGracePeriod`).
const CLOCK_SKEW: Duration = Duration::from_secs(120);

/// Why the CA could not be loaded or could not sign.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("CA directory {dir}: {message}")]
    Layout { dir: PathBuf, message: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    BadFile { path: PathBuf, message: String },
    #[error("certificate signing request: {0}")]
    BadCsr(String),
    #[error("signing failed: {0}")]
    Sign(#[from] rcgen::Error),
}

/// The mesh's certificate authority: signs workload certificates for verified identities.
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    /// The signing certificate's expiry: no certificate it signs may outlive it.
    signer_not_after: OffsetDateTime,
    /// What follows the leaf in every response: the signing certificate and any intermediates
    /// (when the signer is not the root), then the root last; PEM, each ending in a newline.
    chain: Vec<String>,
    root_pem: String,
    /// Where the key material came from, for the start-up log.
    pub origin: String,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("CertificateAuthority")
            .field("origin", &self.origin)
            .field("chain_len", &self.chain.len())
            .finish_non_exhaustive()
    }
}

/// Which of Istio's layouts a directory holds.
enum Layout {
    PluggedIn,
    SelfSigned,
    Empty,
}

fn layout(dir: &Path) -> Result<Layout, CaError> {
    let has = |f: &str| dir.join(f).exists();
    let plugged = [CA_CERT, CA_KEY, ROOT_CERT, CERT_CHAIN];
    let present: Vec<&str> = plugged.iter().copied().filter(|f| has(f)).collect();
    match present.as_slice() {
        [] => Ok(Layout::Empty),
        [CA_CERT, CA_KEY] => Ok(Layout::SelfSigned),
        p if p.len() == plugged.len() => Ok(Layout::PluggedIn),
        // A self-signed layout that also kept its root file (what meshpilot itself writes).
        [CA_CERT, CA_KEY, ROOT_CERT] => Ok(Layout::SelfSigned),
        p => Err(CaError::Layout {
            dir: dir.to_path_buf(),
            message: format!(
                "holds {} but not the rest of a CA: expected {CA_CERT} and {CA_KEY} (a self-signed \
                 CA), or those with {ROOT_CERT} and {CERT_CHAIN} (a plugged-in CA); refusing to \
                 generate a new root over part of an old one",
                p.join(", ")
            ),
        }),
    }
}

fn read(path: &Path) -> Result<String, CaError> {
    std::fs::read_to_string(path).map_err(|source| CaError::Io {
        path: path.to_path_buf(),
        source,
    })
}

impl CertificateAuthority {
    /// Loads the CA from `dir` in one of Istio's layouts, or creates a self-signed root there
    /// when the directory is empty or missing.
    pub fn load_or_create(dir: &Path, trust_domain: &str) -> Result<CertificateAuthority, CaError> {
        match layout(dir)? {
            Layout::Empty => {
                let ca = CertificateAuthority::self_signed(trust_domain)?;
                ca.persist(dir)?;
                Ok(ca)
            }
            Layout::SelfSigned => {
                let cert = read(&dir.join(CA_CERT))?;
                let key = read(&dir.join(CA_KEY))?;
                CertificateAuthority::from_pems(&cert, &key, &[], None, dir)
            }
            Layout::PluggedIn => {
                let cert = read(&dir.join(CA_CERT))?;
                let key = read(&dir.join(CA_KEY))?;
                let root = read(&dir.join(ROOT_CERT))?;
                let chain = read(&dir.join(CERT_CHAIN))?;
                let chain = keys::split_pem_certificates(&chain);
                CertificateAuthority::from_pems(&cert, &key, &chain, Some(&root), dir)
            }
        }
    }

    /// A new self-signed root (ECDSA P-256), valid ten years.
    pub fn self_signed(trust_domain: &str) -> Result<CertificateAuthority, CaError> {
        let key = KeyPair::generate()?;
        let now = OffsetDateTime::now_utc();
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::OrganizationName, trust_domain);
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = now - CLOCK_SKEW;
        params.not_after = now + ROOT_TTL;
        params.serial_number = Some(random_serial());
        let cert = params.self_signed(&key)?;
        let root_pem = cert.pem();
        Ok(CertificateAuthority {
            signer_not_after: params.not_after,
            issuer: Issuer::new(params, key),
            chain: vec![with_newline(root_pem.clone())],
            root_pem: with_newline(root_pem),
            origin: "a new self-signed root".to_string(),
        })
    }

    fn from_pems(
        cert_pem: &str,
        key_pem: &str,
        chain: &[String],
        root_pem: Option<&str>,
        dir: &Path,
    ) -> Result<CertificateAuthority, CaError> {
        let bad = |file: &str, message: String| CaError::BadFile {
            path: dir.join(file),
            message,
        };
        let key = keys::key_pair_from_pem(key_pem).map_err(|m| bad(CA_KEY, m))?;
        let cert_der = keys::first_certificate_der(cert_pem).map_err(|m| bad(CA_CERT, m))?;
        let (_, x509) = x509_parser::certificate::X509Certificate::from_der(&cert_der)
            .map_err(|e| bad(CA_CERT, format!("not an X.509 certificate: {e}")))?;
        if x509.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(bad(
                CA_KEY,
                format!("is not the key of the certificate in {CA_CERT}"),
            ));
        }
        if !x509.is_ca() {
            return Err(bad(CA_CERT, "is not a CA certificate".to_string()));
        }
        let signer_not_after = x509.validity().not_after.to_datetime();
        let issuer = Issuer::from_ca_cert_der(&cert_der.into(), key)
            .map_err(|e| bad(CA_CERT, format!("cannot sign with it: {e}")))?;
        let root_pem = with_newline(root_pem.unwrap_or(cert_pem).trim().to_string());
        // The signing certificate and its intermediates, then the root, each once.
        let mut out: Vec<String> = Vec::new();
        let signer = with_newline(cert_pem.trim().to_string());
        for c in std::iter::once(&signer).chain(chain.iter()) {
            let c = with_newline(c.trim().to_string());
            if c != root_pem && !out.contains(&c) {
                out.push(c);
            }
        }
        out.push(root_pem.clone());
        Ok(CertificateAuthority {
            issuer,
            signer_not_after,
            chain: out,
            root_pem,
            origin: format!("{}", dir.display()),
        })
    }

    /// Writes a self-signed CA's files (the key readable by the owner only).
    fn persist(&self, dir: &Path) -> Result<(), CaError> {
        let io = |path: PathBuf| move |source| CaError::Io { path, source };
        std::fs::create_dir_all(dir).map_err(io(dir.to_path_buf()))?;
        let key_path = dir.join(CA_KEY);
        write_private(&key_path, &self.issuer.key().serialize_pem()).map_err(io(key_path))?;
        for file in [CA_CERT, ROOT_CERT] {
            let path = dir.join(file);
            std::fs::write(&path, &self.root_pem).map_err(io(path))?;
        }
        Ok(())
    }

    /// The root certificate (PEM), what workloads trust.
    pub fn root_pem(&self) -> &str {
        &self.root_pem
    }

    /// Signs the public key of `csr_pem` for `identity`. The CSR's own names and extensions are
    /// ignored: the identity is the authenticated caller's. Returns the chain, leaf first and
    /// root last (at least two entries).
    pub fn sign(
        &self,
        csr_pem: &str,
        identity: &SpiffeId,
        ttl: Duration,
    ) -> Result<Vec<String>, CaError> {
        let public_key = csr_public_key(csr_pem)?;
        let now = OffsetDateTime::now_utc();
        let ttl = ttl.min(MAX_TTL);
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        let uri = identity
            .uri()
            .try_into()
            .map_err(|e| CaError::BadCsr(format!("identity {identity} is not IA5: {e}")))?;
        params.subject_alt_names = vec![SanType::URI(uri)];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.not_before = now - CLOCK_SKEW;
        params.not_after = (now + ttl).min(self.signer_not_after);
        params.serial_number = Some(random_serial());
        let leaf = params.signed_by(&public_key, &self.issuer)?;
        let mut out = Vec::with_capacity(1 + self.chain.len());
        out.push(with_newline(leaf.pem()));
        out.extend(self.chain.iter().cloned());
        Ok(out)
    }
}

/// A server certificate and its key, as PEM.
pub struct ServerCertificate {
    /// Leaf first, then the rest of the chain up to the root.
    pub chain_pem: String,
    pub key_pem: String,
    /// How long it is valid from now.
    pub lifetime: Duration,
}

impl CertificateAuthority {
    /// A certificate for the control plane's own secure port: a new key, `dns_names` as DNS
    /// SANs (what agents check, e.g. `istiod.istio-system.svc`), valid `ttl`.
    pub fn sign_server(
        &self,
        dns_names: &[String],
        ttl: Duration,
    ) -> Result<ServerCertificate, CaError> {
        let key = KeyPair::generate()?;
        let now = OffsetDateTime::now_utc();
        let mut params = CertificateParams::new(dns_names.to_vec())?;
        params.distinguished_name = DistinguishedName::new();
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.not_before = now - CLOCK_SKEW;
        params.not_after = (now + ttl.min(MAX_TTL)).min(self.signer_not_after);
        params.serial_number = Some(random_serial());
        let leaf = params.signed_by(&key, &self.issuer)?;
        let mut chain_pem = with_newline(leaf.pem());
        for c in &self.chain {
            chain_pem.push_str(c);
        }
        let left = params.not_after - now;
        Ok(ServerCertificate {
            chain_pem,
            key_pem: key.serialize_pem(),
            lifetime: Duration::try_from(left).unwrap_or(Duration::ZERO),
        })
    }
}

/// The public key of a PEM CSR whose signature checks out (the requester holds the key).
fn csr_public_key(csr_pem: &str) -> Result<SubjectPublicKeyInfo, CaError> {
    let der = keys::pem_block(csr_pem, "CERTIFICATE REQUEST")
        .map_err(|m| CaError::BadCsr(format!("not a PEM CSR: {m}")))?;
    let (_, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(&der)
        .map_err(|e| CaError::BadCsr(format!("undecodable: {e}")))?;
    csr.verify_signature()
        .map_err(|e| CaError::BadCsr(format!("its signature does not verify: {e}")))?;
    SubjectPublicKeyInfo::from_der(csr.certification_request_info.subject_pki.raw)
        .map_err(|e| CaError::BadCsr(format!("unsupported public key: {e}")))
}

fn with_newline(mut pem: String) -> String {
    if !pem.ends_with('\n') {
        pem.push('\n');
    }
    pem
}

/// 16 random bytes (the standard library's randomly keyed hasher, twice), positive.
fn random_serial() -> SerialNumber {
    let mut bytes = Vec::with_capacity(16);
    for i in 0..2u64 {
        let mut h = std::hash::RandomState::new().build_hasher();
        h.write_u64(i);
        let t = OffsetDateTime::now_utc().unix_timestamp_nanos();
        h.write_i128(t);
        bytes.extend_from_slice(&h.finish().to_be_bytes());
    }
    bytes[0] &= 0x7f;
    SerialNumber::from_slice(&bytes)
}

#[cfg(unix)]
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(contents.as_bytes())
}

#[cfg(not(unix))]
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    std::fs::write(path, contents)
}
