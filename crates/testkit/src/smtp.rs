//! A real SMTP server standing in for a mail relay (RFC 5321, the part a client sending
//! mail uses: EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT; no TLS, no AUTH): records
//! every message it accepts, or answers a transient failure while told to; it can take a
//! while to accept each message (a slow relay) and counts the messages it was taking at
//! once.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// One accepted message.
#[derive(Debug, Clone, PartialEq)]
pub struct Mail {
    pub from: String,
    pub to: Vec<String>,
    /// Headers and body as sent (dot-stuffing undone).
    pub data: String,
}

impl Mail {
    /// A header's value (the first with that name, case-insensitive).
    pub fn header(&self, name: &str) -> Option<String> {
        self.data
            .lines()
            .take_while(|l| !l.is_empty())
            .find_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
            })
    }
}

#[derive(Default)]
struct Inner {
    mails: Vec<Mail>,
    /// Answer DATA with 451 (try again later) instead of accepting.
    down: bool,
    /// How long before a message's DATA is answered.
    delay: std::time::Duration,
    accepting: usize,
    peak_accepting: usize,
    /// Messages answered 451 while down.
    refused: usize,
}

/// The server; stops when dropped.
pub struct SmtpServer {
    /// `smtp://127.0.0.1:<port>` (plain, as lettre's URLs name it).
    pub url: String,
    inner: Arc<Mutex<Inner>>,
    server: JoinHandle<()>,
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn lock(inner: &Mutex<Inner>) -> std::sync::MutexGuard<'_, Inner> {
    inner.lock().unwrap_or_else(|p| p.into_inner())
}

async fn session(socket: tokio::net::TcpStream, inner: Arc<Mutex<Inner>>) -> std::io::Result<()> {
    let (read, mut write) = socket.into_split();
    let mut lines = BufReader::new(read).lines();
    write.write_all(b"220 testkit ESMTP\r\n").await?;
    let (mut from, mut to) = (String::new(), Vec::new());
    while let Some(line) = lines.next_line().await? {
        let upper = line.to_ascii_uppercase();
        let reply: &[u8] = if upper.starts_with("EHLO") {
            b"250-testkit\r\n250 8BITMIME\r\n"
        } else if upper.starts_with("HELO") || upper.starts_with("NOOP") {
            b"250 OK\r\n"
        } else if upper.starts_with("MAIL FROM:") {
            from = line[10..].trim().trim_matches(['<', '>']).to_owned();
            to.clear();
            b"250 OK\r\n"
        } else if upper.starts_with("RCPT TO:") {
            to.push(line[8..].trim().trim_matches(['<', '>']).to_owned());
            b"250 OK\r\n"
        } else if upper.starts_with("RSET") {
            from.clear();
            to.clear();
            b"250 OK\r\n"
        } else if upper.starts_with("DATA") {
            write.write_all(b"354 end with <CRLF>.<CRLF>\r\n").await?;
            let mut data = String::new();
            while let Some(l) = lines.next_line().await? {
                if l == "." {
                    break;
                }
                data.push_str(l.strip_prefix('.').unwrap_or(&l));
                data.push('\n');
            }
            let delay = {
                let mut state = lock(&inner);
                state.accepting += 1;
                state.peak_accepting = state.peak_accepting.max(state.accepting);
                state.delay
            };
            tokio::time::sleep(delay).await;
            let mut state = lock(&inner);
            state.accepting -= 1;
            if state.down {
                state.refused += 1;
                b"451 try again later\r\n"
            } else {
                state.mails.push(Mail {
                    from: from.clone(),
                    to: to.clone(),
                    data,
                });
                b"250 queued\r\n"
            }
        } else if upper.starts_with("QUIT") {
            write.write_all(b"221 bye\r\n").await?;
            return Ok(());
        } else {
            b"502 not implemented\r\n"
        };
        write.write_all(reply).await?;
    }
    Ok(())
}

impl SmtpServer {
    pub async fn start() -> SmtpServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the SMTP server");
        let url = format!("smtp://{}", listener.local_addr().expect("address"));
        let inner = Arc::new(Mutex::new(Inner::default()));
        let shared = inner.clone();
        let server = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let inner = shared.clone();
                tokio::spawn(async move {
                    let _ = session(socket, inner).await;
                });
            }
        });
        SmtpServer { url, inner, server }
    }

    /// Every message accepted so far.
    pub fn mails(&self) -> Vec<Mail> {
        lock(&self.inner).mails.clone()
    }

    /// Each message's DATA is answered `delay` after it ends.
    pub fn set_delay(&self, delay: std::time::Duration) {
        lock(&self.inner).delay = delay;
    }

    /// The most messages being accepted at once so far.
    pub fn peak_accepting(&self) -> usize {
        lock(&self.inner).peak_accepting
    }

    /// How many messages were answered 451 while down.
    pub fn refused(&self) -> usize {
        lock(&self.inner).refused
    }

    /// Refuses messages with a transient 451 while `down`.
    pub fn set_down(&self, down: bool) {
        lock(&self.inner).down = down;
    }
}
