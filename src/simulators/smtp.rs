//! An SMTP server, simulated: it speaks SMTP (RFC 5321) on loopback and keeps every message it
//! accepts, so tests read the e-mails forma sent, and `serve --demo` can show them.
//!
//! The protocol (parsing, the session's state machine, dot-unstuffing, the replies) is the
//! `mailin` crate's, which does no I/O of its own; this module only moves its lines over a tokio
//! socket. (`mailin-embedded`, its ready-made server, runs its own thread pool of blocking
//! sockets, which fits a tokio test poorly.)
//!
//! It can be told to misbehave as real servers do: to stall (take connections and say nothing,
//! until told to go on), to refuse service (421, a passing failure), or to refuse given recipients
//! (550, a permanent one).

use std::collections::HashSet;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use mailin::{Action, Handler, Response, SessionBuilder, response};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::{SecretUrl, SmtpConfig};

/// The longest command or data line taken (RFC 5321 §4.5.3.1.6 allows 1000 octets); longer ends
/// the session.
const MAX_LINE: u64 = 4096;
/// The name the server greets with.
const NAME: &str = "smtp.forma.test";

/// How the simulated server treats a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Takes every message.
    Accept,
    /// Takes the connection and says nothing (not even the greeting) until the mode changes;
    /// the connection then goes on in the new mode.
    Stall,
    /// Greets with 421 "service not available" and hangs up.
    Refuse,
}

/// One message the server accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    /// The envelope's sender (`MAIL FROM`).
    pub from: String,
    /// The envelope's recipients (`RCPT TO`).
    pub to: Vec<String>,
    /// The message as sent (RFC 5322 headers and body, CRLF line ends, dot-unstuffed).
    pub data: String,
}

impl Mail {
    /// The first header named `name` (any case), unfolded; `None` when absent.
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next().unwrap_or_default();
        let mut value: Option<String> = None;
        for line in head.split("\r\n") {
            if let Some(v) = value.as_mut() {
                if line.starts_with([' ', '\t']) {
                    v.push_str(line);
                    continue;
                }
                break;
            }
            if let Some((key, rest)) = line.split_once(':') {
                if key.eq_ignore_ascii_case(name) {
                    value = Some(rest.trim().to_owned());
                }
            }
        }
        value
    }

    /// What follows the headers, as sent (in its transfer encoding).
    pub fn body(&self) -> &str {
        self.data
            .split_once("\r\n\r\n")
            .map_or("", |(_, body)| body)
    }
}

#[derive(Default)]
struct Inner {
    mails: Vec<Mail>,
    refused_recipients: HashSet<String>,
    full_mailboxes: HashSet<String>,
    connections: usize,
}

/// A running simulated SMTP server. Cheap to clone.
#[derive(Clone)]
pub struct SmtpSim {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    mode: Arc<watch::Sender<Mode>>,
}

impl SmtpSim {
    /// Starts it on a free loopback port until `stop`.
    pub async fn start(stop: CancellationToken) -> io::Result<Self> {
        Self::start_on(0, stop).await
    }

    /// Starts it on loopback port `port` (0: any free one) until `stop`: a test that needs the
    /// server to come back where forma expects it starts it on the same port again.
    pub async fn start_on(port: u16, stop: CancellationToken) -> io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        let sim = Self {
            addr: listener.local_addr()?,
            inner: Arc::default(),
            mode: Arc::new(watch::channel(Mode::Accept).0),
        };
        let server = sim.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = stop.cancelled() => break,
                    accepted = listener.accept() => accepted,
                };
                let Ok((stream, peer)) = accepted else {
                    continue;
                };
                server.lock().connections += 1;
                let (server, stop) = (server.clone(), stop.clone());
                tokio::spawn(async move {
                    tokio::select! {
                        () = stop.cancelled() => {}
                        served = server.serve(stream, peer.ip()) => {
                            if let Err(e) = served {
                                tracing::debug!(error = %e, "an SMTP session of the simulator ended");
                            }
                        }
                    }
                });
            }
        });
        Ok(sim)
    }

    /// `smtp://127.0.0.1:port`, plain SMTP without authentication.
    pub fn url(&self) -> String {
        format!("smtp://{}", self.addr)
    }

    /// Points forma's `[smtp]` settings at this server.
    pub fn configure(&self, smtp: &mut SmtpConfig) {
        smtp.url = Some(SecretUrl::new(self.url()));
        smtp.from = Some("forma <forma@shop.example>".to_owned());
    }

    /// Every message accepted so far, in order.
    pub fn mails(&self) -> Vec<Mail> {
        self.mails_from(0)
    }

    /// The messages accepted after the first `seen`, in order: for a reader that polls.
    pub fn mails_from(&self, seen: usize) -> Vec<Mail> {
        self.lock().mails.get(seen..).unwrap_or_default().to_vec()
    }

    /// How many connections were made to it so far.
    pub fn connections(&self) -> usize {
        self.lock().connections
    }

    pub fn set_mode(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    /// `RCPT TO:<address>` is answered 550 from now on.
    pub fn refuse_recipient(&self, address: &str) {
        self.lock()
            .refused_recipients
            .insert(address.to_ascii_lowercase());
    }

    /// `RCPT TO:<address>` is answered 452 (a full mailbox: try later) from now on.
    pub fn fill_mailbox(&self, address: &str) {
        self.lock()
            .full_mailboxes
            .insert(address.to_ascii_lowercase());
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn serve(&self, stream: TcpStream, peer: IpAddr) -> io::Result<()> {
        let mut mode = self.mode.subscribe();
        let mode = *mode
            .wait_for(|m| *m != Mode::Stall)
            .await
            .map_err(io::Error::other)?;
        let (read, mut write) = stream.into_split();
        if mode == Mode::Refuse {
            return reply(&mut write, &response::NO_SERVICE).await;
        }
        let recorder = Recorder {
            sim: self.clone(),
            from: String::new(),
            to: Vec::new(),
            data: Vec::new(),
        };
        let mut session = SessionBuilder::new(NAME).build(peer, recorder);
        reply(&mut write, &session.greeting()).await?;
        let mut reader = BufReader::new(read);
        let mut line = Vec::new();
        loop {
            line.clear();
            let read = (&mut reader)
                .take(MAX_LINE)
                .read_until(b'\n', &mut line)
                .await?;
            if read == 0 || !line.ends_with(b"\n") {
                return Ok(());
            }
            let response = session.process(&line);
            match response.action {
                Action::Reply => reply(&mut write, &response).await?,
                Action::NoReply => {}
                // No STARTTLS is offered, so an upgrade is never asked for; hang up if it is.
                Action::Close | Action::UpgradeTls => {
                    return reply(&mut write, &response).await;
                }
            }
        }
    }
}

async fn reply(write: &mut (impl AsyncWriteExt + Unpin), response: &Response) -> io::Result<()> {
    write.write_all(&response.buffer()?).await?;
    write.flush().await
}

/// Collects one session's messages into the simulator.
struct Recorder {
    sim: SmtpSim,
    from: String,
    to: Vec<String>,
    data: Vec<u8>,
}

impl Handler for Recorder {
    fn rcpt(&mut self, to: &str) -> Response {
        let to = to.to_ascii_lowercase();
        let sim = self.sim.lock();
        if sim.refused_recipients.contains(&to) {
            response::NO_MAILBOX
        } else if sim.full_mailboxes.contains(&to) {
            Response::custom(452, "4.2.2 Mailbox full, try again later".to_owned())
        } else {
            response::OK
        }
    }

    fn data_start(&mut self, _domain: &str, from: &str, _is8bit: bool, to: &[String]) -> Response {
        from.clone_into(&mut self.from);
        self.to = to.to_vec();
        self.data.clear();
        response::OK
    }

    fn data(&mut self, buf: &[u8]) -> io::Result<()> {
        self.data.extend_from_slice(buf);
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        let mail = Mail {
            from: std::mem::take(&mut self.from),
            to: std::mem::take(&mut self.to),
            data: String::from_utf8_lossy(&std::mem::take(&mut self.data)).into_owned(),
        };
        self.sim.lock().mails.push(mail);
        response::OK
    }
}
