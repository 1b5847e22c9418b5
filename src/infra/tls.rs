//! TLS for outgoing HTTPS calls (Shopify, SimplyPrint, Sendcloud): rustls with the ring provider.

/// Installs the process-wide rustls crypto provider; idempotent.
pub fn install_crypto_provider() {
    // Err means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The builder every outgoing HTTP client starts from: the crypto provider is in place first, so
/// building the client cannot fail for want of one.
pub fn http_client() -> reqwest::ClientBuilder {
    install_crypto_provider();
    reqwest::Client::builder()
}
