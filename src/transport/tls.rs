//! The `https://` transport: a pooled reqwest client (rustls), rebuilt in the child of a fork.
//!
//! Certificates are checked as browsers check them, with one addition: a certificate that the
//! user named in `--ca-file` is trusted as the server's own certificate too. A self-signed
//! certificate made the common way (`openssl req -x509`) is a CA certificate, and webpki refuses
//! a CA certificate as a server's end entity; curl (OpenSSL) accepts one that is a trust anchor.
//! Such a certificate is accepted only when it is byte for byte one of the `--ca-file`
//! certificates, names the host and is within its validity period; rustls then checks that the
//! server holds its key (the handshake's signature).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

use super::{describe, too_large, ClientConfig, Progress, RequestSpec, Response};
use crate::engine::runtime::PerProcess;
use crate::error::{Error, Result};

/// A keep-alive pooled client shared by all users of a process.
pub struct Client {
    config: ClientConfig,
    current: PerProcess<reqwest::Client>,
}

impl Client {
    pub fn new(config: ClientConfig) -> Result<Self> {
        let client = build(&config)?; // fail early on a bad CA file
        let current = PerProcess::new();
        current.with(|slot| *slot = Some(client));
        Ok(Client { config, current })
    }

    pub async fn exchange(
        &self,
        spec: &RequestSpec,
        index: usize,
        start: Instant,
        progress: &mut Progress<'_>,
    ) -> Result<Response> {
        let client = self.current.get_or_try_init(|| build(&self.config))?;
        let body = &spec.bodies[index];
        let mut builder = client
            .request(spec.method.clone(), spec.url.clone())
            .headers(spec.headers.clone());
        if !body.headers.is_empty() {
            builder = builder.headers(body.headers.clone());
        }
        let request = builder
            .body(body.bytes.clone())
            .build()
            .map_err(|e| request_error(spec, &e))?;
        let mut response = client
            .execute(request)
            .await
            .map_err(|e| request_error(spec, &e))?;
        let ttfb = start.elapsed();
        let status = response.status().as_u16();
        let keep = progress.head(status, response.headers());
        if response
            .content_length()
            .is_some_and(|n| n > spec.max_response_bytes as u64)
        {
            return Err(too_large(spec));
        }
        // Grown as bytes arrive, never sized from the header (see `plain`).
        let mut body = BytesMut::new();
        let mut received = 0;
        let announced = response.content_length();
        while let Some(chunk) = response.chunk().await.map_err(|e| match announced {
            Some(length) => Error::Transport {
                url: spec.url.to_string(),
                reason: super::cut_short(length as usize, &describe(&e)),
            },
            None => request_error(spec, &e),
        })? {
            if received + chunk.len() > spec.max_response_bytes {
                return Err(too_large(spec));
            }
            received += chunk.len();
            if keep {
                body.extend_from_slice(&chunk);
            }
            progress.frame(&chunk, start)?;
        }
        Ok(Response {
            status,
            headers: std::mem::take(response.headers_mut()),
            body: body.freeze(),
            length: received,
            ttfb,
            total: start.elapsed(),
            resent: false,
        })
    }
}

fn build(config: &ClientConfig) -> Result<reqwest::Client> {
    let builder = reqwest::Client::builder()
        .http1_only()
        .tcp_nodelay(true)
        .no_proxy()
        // A 3xx comes back as it is, and `Transport::send` fails it: reqwest would re-send the
        // body and the `--header` values (all but `Authorization`) to whatever host it names.
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(Duration::from_secs(90));
    builder
        .use_preconfigured_tls(rustls_config(config, b"http/1.1")?)
        .build()
        .map_err(|e| Error::Runtime(format!("cannot build the HTTPS client: {}", describe(&e))))
}

/// The certificates of a PEM file, at least one.
pub(crate) fn read_ca_file(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>> {
    let fail =
        |reason: String| Error::InvalidArgument(format!("CA file {}: {reason}", path.display()));
    let pem = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
    let ders = CertificateDer::pem_slice_iter(&pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| fail(format!("not a PEM certificate bundle: {e}")))?;
    if ders.is_empty() {
        return Err(fail("no PEM certificate in the file".into()));
    }
    Ok(ders)
}

/// The TLS settings of `config`, for both transports (HTTPS and gRPC), offering the one protocol
/// `alpn` names, certificates checked by [`Checked`]: against the public roots and the `--ca-file`
/// certificates (as CAs and as servers' own), or not at all with `--insecure`.
pub(crate) fn rustls_config(config: &ClientConfig, alpn: &[u8]) -> Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let trusted = match &config.ca_file {
        Some(path) if !config.insecure => read_ca_file(path)?,
        _ => Vec::new(),
    };
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let (_, ignored) = roots.add_parsable_certificates(trusted.iter().cloned());
    if !trusted.is_empty() && ignored == trusted.len() {
        return Err(Error::InvalidArgument(
            "no usable certificate in the CA file".into(),
        ));
    }
    let webpki =
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
            .build()
            .map_err(|e| Error::InvalidArgument(format!("CA file: {e}")))?;
    let verifier = Checked {
        webpki,
        pinned: trusted,
        any: config.insecure,
    };
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Runtime(format!("TLS: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    tls.alpn_protocols = vec![alpn.to_vec()];
    Ok(tls)
}

/// webpki's verification, plus: a CA certificate from `--ca-file` presented as the server's own;
/// or, with `any` (`--insecure`), any certificate, any name, any dates. The handshake's signatures
/// are checked in every case (with the certificate given), so the connection is encrypted, to a
/// peer that holds the certificate's key.
#[derive(Debug)]
struct Checked {
    webpki: Arc<WebPkiServerVerifier>,
    pinned: Vec<CertificateDer<'static>>,
    any: bool,
}

impl ServerCertVerifier for Checked {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        if self.any {
            return Ok(ServerCertVerified::assertion());
        }
        let verdict = self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        );
        let refused_as_ca = matches!(
            &verdict,
            Err(rustls::Error::InvalidCertificate(CertificateError::Other(other)))
                if other.to_string().contains("CaUsedAsEndEntity")
        );
        if !refused_as_ca
            || !self
                .pinned
                .iter()
                .any(|c| c.as_ref() == end_entity.as_ref())
        {
            return verdict;
        }
        // Trusted by being one of the user's own certificates, so no chain to build: the name and
        // the dates are what is left to check (rustls checks the handshake's signature with it).
        let parsed = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_name(&parsed, server_name)?;
        check_validity(end_entity, now)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// Whether `now` lies within the certificate's validity period.
fn check_validity(
    cert: &CertificateDer<'_>,
    now: UnixTime,
) -> std::result::Result<(), rustls::Error> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
    let validity = parsed.validity();
    let now = now.as_secs() as i64;
    if now < validity.not_before.timestamp() {
        return Err(rustls::Error::InvalidCertificate(
            CertificateError::NotValidYet,
        ));
    }
    if now > validity.not_after.timestamp() {
        return Err(rustls::Error::InvalidCertificate(CertificateError::Expired));
    }
    Ok(())
}

/// A reqwest error as one of ours: a refused certificate is named as one, with the fix.
fn request_error(spec: &RequestSpec, err: &reqwest::Error) -> Error {
    let reason = describe(err);
    let url = spec.url.to_string();
    if let Some(problem) = certificate_problem(Some(err)) {
        Error::Certificate { url, problem }
    } else if err.is_connect() {
        Error::Connect { url, reason }
    } else {
        Error::Transport { url, reason }
    }
}

/// What is wrong with the server's certificate, when that is why the request failed: the first
/// rustls error in the chain from `source` (on both transports).
pub(crate) fn certificate_problem(
    mut source: Option<&(dyn std::error::Error + 'static)>,
) -> Option<String> {
    while let Some(e) = source {
        // The rustls error sits inside an io::Error (tokio-rustls), maybe inside another.
        let mut inner = e;
        while let Some(wrapped) = inner
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            inner = wrapped;
        }
        if let Some(tls) = inner.downcast_ref::<rustls::Error>() {
            return match tls {
                rustls::Error::InvalidCertificate(problem) => Some(certificate_text(problem)),
                _ => None,
            };
        }
        source = e.source();
    }
    None
}

pub(crate) fn certificate_text(problem: &CertificateError) -> String {
    match problem {
        CertificateError::UnknownIssuer => {
            "it is not signed by a certificate authority this client trusts".into()
        }
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            "it has expired".into()
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            "it is not valid yet".into()
        }
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            "it does not name this host".into()
        }
        CertificateError::Other(other) if other.to_string().contains("CaUsedAsEndEntity") => {
            "it is a CA certificate used as the server's own (self-signed) and is not in --ca-file"
                .into()
        }
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two self-signed certificates for IP 127.0.0.1 made the common way (`openssl req -x509
    /// -addext subjectAltName=IP:127.0.0.1`): CA certificates, as such ones are. Keys discarded.
    const A: &[u8] = include_bytes!("testdata/self_signed_a.pem");
    const B: &[u8] = include_bytes!("testdata/self_signed_b.pem");

    fn der(pem: &[u8]) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(pem).unwrap()
    }

    /// The verifier `rustls_config` installs with `--ca-file` (not `--insecure`), trusting
    /// `trusted`.
    fn verifier(trusted: &[CertificateDer<'static>]) -> Checked {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add_parsable_certificates(trusted.iter().cloned());
        Checked {
            webpki: WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap(),
            pinned: trusted.to_vec(),
            any: false,
        }
    }

    /// The certificate's validity period, in seconds since the epoch.
    fn validity(cert: &CertificateDer<'_>) -> (u64, u64) {
        let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).unwrap();
        let seconds = |t: i64| u64::try_from(t).unwrap();
        (
            seconds(parsed.validity().not_before.timestamp()),
            seconds(parsed.validity().not_after.timestamp()),
        )
    }

    fn at(seconds: u64) -> UnixTime {
        UnixTime::since_unix_epoch(Duration::from_secs(seconds))
    }

    fn verify(
        verifier: &Checked,
        cert: &CertificateDer<'_>,
        host: &str,
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let name = ServerName::try_from(host.to_string()).unwrap();
        verifier.verify_server_cert(cert, &[], &name, &[], now)
    }

    fn problem(verdict: std::result::Result<ServerCertVerified, rustls::Error>) -> String {
        match verdict {
            Err(rustls::Error::InvalidCertificate(problem)) => certificate_text(&problem),
            Err(other) => panic!("not a certificate problem: {other:?}"),
            Ok(_) => panic!("accepted"),
        }
    }

    #[test]
    fn a_self_signed_certificate_from_the_ca_file_is_the_servers_own_within_its_dates() {
        let a = der(A);
        let (not_before, not_after) = validity(&a);
        let pinned = verifier(std::slice::from_ref(&a));
        let middle = not_before + (not_after - not_before) / 2;
        assert!(verify(&pinned, &a, "127.0.0.1", at(middle)).is_ok());
        assert_eq!(
            problem(verify(&pinned, &a, "127.0.0.1", at(not_after + 1))),
            "it has expired"
        );
        assert_eq!(
            problem(verify(&pinned, &a, "127.0.0.1", at(not_before - 1))),
            "it is not valid yet"
        );
        assert_eq!(
            problem(verify(&pinned, &a, "localhost", at(middle))),
            "it does not name this host"
        );
    }

    /// webpki refuses a certificate out of its dates before it looks at its CA flag, so the
    /// assertions above hold without `check_validity`; it is checked here on its own.
    #[test]
    fn the_validity_period_is_checked_at_both_ends() {
        let a = der(A);
        let (not_before, not_after) = validity(&a);
        for ok in [not_before, not_after] {
            assert!(check_validity(&a, at(ok)).is_ok());
        }
        assert_eq!(
            check_validity(&a, at(not_before - 1)),
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidYet
            ))
        );
        assert_eq!(
            check_validity(&a, at(not_after + 1)),
            Err(rustls::Error::InvalidCertificate(CertificateError::Expired))
        );
        let garbage = CertificateDer::from(b"not DER".to_vec());
        assert_eq!(
            check_validity(&garbage, at(not_before)),
            Err(rustls::Error::InvalidCertificate(
                CertificateError::BadEncoding
            ))
        );
    }

    #[test]
    fn a_self_signed_certificate_not_in_the_ca_file_is_refused() {
        let (a, b) = (der(A), der(B));
        let (not_before, _) = validity(&b);
        // b is presented, the user trusts only a: webpki refuses b (a CA certificate as a server's
        // own) and, b not being one of the user's, that refusal stands
        let only_a = verifier(std::slice::from_ref(&a));
        assert_eq!(
            problem(verify(&only_a, &b, "127.0.0.1", at(not_before + 60))),
            "it is a CA certificate used as the server's own (self-signed) and is not in --ca-file"
        );
    }

    #[test]
    fn a_ca_file_is_read_whole_or_refused_naming_it() {
        let dir = std::env::temp_dir().join(format!("li-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let both = dir.join("both.pem");
        std::fs::write(&both, [A, B].concat()).unwrap();
        assert_eq!(read_ca_file(&both).unwrap(), vec![der(A), der(B)]);

        let empty = dir.join("empty.pem");
        std::fs::write(&empty, b"not a certificate\n").unwrap();
        let bad = dir.join("bad.pem");
        std::fs::write(
            &bad,
            b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let missing = dir.join("missing.pem");
        for (path, reason) in [
            (&empty, "no PEM certificate in the file"),
            (&bad, "not a PEM certificate bundle"),
            (&missing, "No such file"),
        ] {
            let message = read_ca_file(path).unwrap_err().to_string();
            assert!(
                message.contains(&format!("CA file {}: ", path.display())),
                "{message}"
            );
            assert!(message.contains(reason), "{message}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_ca_file_without_a_usable_certificate_is_refused() {
        let dir = std::env::temp_dir().join(format!("li-tls-usable-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // a PEM block whose contents ("not DER") are no certificate
        let junk = dir.join("junk.pem");
        std::fs::write(
            &junk,
            b"-----BEGIN CERTIFICATE-----\nbm90IERFUg==\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let good = dir.join("good.pem");
        std::fs::write(&good, A).unwrap();
        let config = |path: &std::path::Path| ClientConfig {
            insecure: false,
            ca_file: Some(path.to_path_buf()),
        };
        let message = rustls_config(&config(&junk), b"h2")
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("no usable certificate in the CA file"),
            "{message}"
        );
        assert!(rustls_config(&config(&good), b"h2").is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
