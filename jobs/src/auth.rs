//! The start of every RPC connection: a challenge-response handshake that proves both ends
//! know the cluster secret (without sending it), then length-delimited bincode frames of bounded
//! size. A peer with the wrong secret, or garbage on the port, costs one dropped connection.
//!
//! Protocol (both nonces are 32 random bytes, MACs are HMAC-SHA256 keyed by the secret):
//! 1. server → client: `MAGIC`, server nonce
//! 2. client → server: `MAGIC`, client nonce, MAC("client" ‖ server nonce ‖ client nonce)
//! 3. server → client: MAC("server" ‖ server nonce ‖ client nonce), or it closes the connection.

use std::time::Duration;

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use tarpc::serde_transport::Transport;
use tarpc::tokio_serde::formats::Bincode;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::LengthDelimitedCodec;

use crate::error::{Error, Result};

/// The largest RPC frame either side accepts; a larger length prefix drops the connection.
pub const MAX_FRAME_LEN: usize = 64 << 20;
/// How long the handshake may take before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

const MAGIC: &[u8; 8] = b"MRCLUST1";
const NONCE_LEN: usize = 32;
const MAC_LEN: usize = 32;

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &str, role: &[u8], server_nonce: &[u8], client_nonce: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(role);
    mac.update(server_nonce);
    mac.update(client_nonce);
    mac
}

fn refused(reason: &'static str) -> Error {
    Error::Handshake { reason }
}

/// Runs the server side of the handshake on a freshly accepted connection.
///
/// # Errors
/// [`Error::Handshake`] if the client does not speak the protocol or uses another secret
/// (the caller should log it and drop the connection), [`Error::Io`] on I/O failure.
pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, secret: &str) -> Result<()> {
    tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        let mut server_nonce = [0u8; NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut server_nonce);
        stream.write_all(MAGIC).await?;
        stream.write_all(&server_nonce).await?;
        stream.flush().await?;

        let mut hello = [0u8; MAGIC.len() + NONCE_LEN + MAC_LEN];
        stream
            .read_exact(&mut hello)
            .await
            .map_err(|_| refused("the client closed during the handshake"))?;
        if &hello[..MAGIC.len()] != MAGIC {
            return Err(refused("the client does not speak this protocol"));
        }
        let client_nonce = &hello[MAGIC.len()..MAGIC.len() + NONCE_LEN];
        let client_mac = &hello[MAGIC.len() + NONCE_LEN..];
        mac(secret, b"client", &server_nonce, client_nonce)
            .verify_slice(client_mac)
            .map_err(|_| refused("the client used a wrong cluster secret"))?;
        let reply = mac(secret, b"server", &server_nonce, client_nonce)
            .finalize()
            .into_bytes();
        stream.write_all(&reply).await?;
        stream.flush().await?;
        Ok(())
    })
    .await
    .map_err(|_| refused("the handshake timed out"))?
}

/// Runs the client side of the handshake on a freshly opened connection.
///
/// # Errors
/// [`Error::Handshake`] if the server does not speak the protocol, or refuses our secret (it
/// closes the connection), or cannot prove it knows the secret; [`Error::Io`] on I/O failure.
pub async fn connect<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    secret: &str,
) -> Result<()> {
    tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        let mut challenge = [0u8; MAGIC.len() + NONCE_LEN];
        stream
            .read_exact(&mut challenge)
            .await
            .map_err(|_| refused("the server closed during the handshake"))?;
        if &challenge[..MAGIC.len()] != MAGIC {
            return Err(refused("the server does not speak this protocol"));
        }
        let server_nonce = &challenge[MAGIC.len()..];
        let mut client_nonce = [0u8; NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut client_nonce);
        let proof = mac(secret, b"client", server_nonce, &client_nonce)
            .finalize()
            .into_bytes();
        stream.write_all(MAGIC).await?;
        stream.write_all(&client_nonce).await?;
        stream.write_all(&proof).await?;
        stream.flush().await?;

        let mut reply = [0u8; MAC_LEN];
        stream.read_exact(&mut reply).await.map_err(|_| {
            refused("the server refused the handshake (is the cluster secret the same?)")
        })?;
        mac(secret, b"server", server_nonce, &client_nonce)
            .verify_slice(&reply)
            .map_err(|_| refused("the server does not know the cluster secret"))?;
        Ok(())
    })
    .await
    .map_err(|_| refused("the handshake timed out"))?
}

/// Opens a TCP connection to `addr` and runs the client handshake on it, all within `timeout`.
///
/// # Errors
/// [`Error::Io`] if the address cannot be reached in time, [`Error::Handshake`] if the peer
/// refuses the secret or does not speak the protocol.
pub async fn dial(addr: &str, secret: &str, timeout: Duration) -> Result<tokio::net::TcpStream> {
    let mut stream = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("connecting to {addr} timed out"),
            )
        })??;
    stream.set_nodelay(true)?;
    connect(&mut stream, secret).await?;
    Ok(stream)
}

/// Accepts connections on `listener` until `shutdown` resolves; each one that passes the
/// handshake is handed to `serve_connection` on a task of its own, each one that does not is
/// logged (with the peer and the reason) and dropped.
pub async fn accept_loop<F, Fut>(
    listener: tokio::net::TcpListener,
    secret: std::sync::Arc<str>,
    serve_connection: F,
    shutdown: impl std::future::Future<Output = ()>,
) where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let serve_connection = std::sync::Arc::new(serve_connection);
    let accept = async {
        loop {
            let (mut stream, peer) = match listener.accept().await {
                Ok(conn) => conn,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let secret = secret.clone();
            let serve_connection = serve_connection.clone();
            tokio::spawn(async move {
                if let Err(error) = accept(&mut stream, &secret).await {
                    tracing::warn!(%peer, %error, "refused an RPC connection");
                    return;
                }
                serve_connection(stream).await;
            });
        }
    };
    tokio::select! {
        _ = accept => {}
        _ = shutdown => {}
    }
}

/// Wraps an authenticated stream in tarpc's bincode transport with frames bounded by
/// [`MAX_FRAME_LEN`].
pub fn transport<S, Item, SinkItem>(
    stream: S,
) -> Transport<S, Item, SinkItem, Bincode<Item, SinkItem>>
where
    S: AsyncRead + AsyncWrite,
    Item: for<'de> serde::Deserialize<'de>,
    SinkItem: serde::Serialize,
{
    let framed = LengthDelimitedCodec::builder()
        .max_frame_length(MAX_FRAME_LEN)
        .new_framed(stream);
    tarpc::serde_transport::new(framed, Bincode::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn same_secret_passes_both_ways() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        let (server, client) = tokio::join!(accept(&mut a, "s3cret"), connect(&mut b, "s3cret"));
        server.unwrap();
        client.unwrap();
    }

    #[tokio::test]
    async fn wrong_secret_is_refused_on_both_sides() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        let server = tokio::spawn(async move {
            let result = accept(&mut a, "right").await;
            drop(a); // the server drops a connection it refuses
            result
        });
        let client = connect(&mut b, "wrong").await;
        let server = server.await.unwrap();
        assert!(matches!(server, Err(Error::Handshake { reason }) if reason.contains("secret")));
        assert!(matches!(client, Err(Error::Handshake { .. })));
    }

    #[tokio::test]
    async fn garbage_is_refused() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        let server = tokio::spawn(async move { accept(&mut a, "s").await });
        let mut junk = [0u8; 40];
        b.read_exact(&mut junk).await.unwrap();
        b.write_all(&[0x55; 72]).await.unwrap();
        assert!(matches!(
            server.await.unwrap(),
            Err(Error::Handshake { .. })
        ));
    }
}
