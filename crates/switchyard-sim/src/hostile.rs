//! A hostile provider for robustness tests: an HTTP/1.1 server that answers
//! every request with whatever a script returns (any status, any headers, such
//! as `Retry-After: inf` or a redirect to another port, a body that trickles or
//! never ends), and records each request it received, headers included. The
//! simulator proper ([`crate::start`]) speaks the providers' formats faithfully;
//! this one is for the answers no well-behaved provider gives.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// One request as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// Method and path, as in `POST /v1/messages`.
    pub request_line: String,
    /// Header names (lowercase) and values.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Received {
    /// A header's value, by lowercase name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON, when it is.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// How the body of an answer is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// All at once, with its length.
    Bytes(Vec<u8>),
    /// `total` bytes of `x` in chunks of `chunk` bytes, one every `every`, with
    /// the total announced in `Content-Length` (`announce`) or not (the
    /// connection then closes at the end).
    Trickle {
        /// Bytes in all.
        total: usize,
        /// Bytes per write.
        chunk: usize,
        /// Pause between writes.
        every: Duration,
        /// Whether `Content-Length` announces the total.
        announce: bool,
    },
}

/// One scripted answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Body,
}

impl Answer {
    /// A JSON answer.
    pub fn json(status: u16, body: serde_json::Value) -> Self {
        Self {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: Body::Bytes(body.to_string().into_bytes()),
        }
    }

    /// This answer with one more header.
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
}

/// The script: the answer to the n-th request (0-based) given what it was.
pub type Script = dyn Fn(usize, &Received) -> Answer + Send + Sync;

/// A running hostile server; stops when dropped.
pub struct HostileServer {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    task: JoinHandle<()>,
}

impl HostileServer {
    /// Listens on a free local port and answers by `script`.
    pub async fn start(script: Arc<Script>) -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = received.clone();
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let (script, log) = (script.clone(), log.clone());
                connections.spawn(serve(stream, script, log));
                while connections.try_join_next().is_some() {}
            }
        });
        Ok(Self {
            addr,
            received,
            task,
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().clone()
    }
}

impl Drop for HostileServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Longest request head or body accepted (the tests' requests are small).
const MAX_REQUEST: usize = 8 * 1024 * 1024;

async fn serve(mut stream: TcpStream, script: Arc<Script>, log: Arc<Mutex<Vec<Received>>>) {
    let Some(request) = read_request(&mut stream).await else {
        return;
    };
    let n = {
        let mut l = log.lock();
        l.push(request.clone());
        l.len() - 1
    };
    let answer = script(n, &request);
    let _ = write_answer(&mut stream, &answer).await;
    let _ = stream.shutdown().await;
}

async fn read_request(stream: &mut TcpStream) -> Option<Received> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 || buf.len() > MAX_REQUEST {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next()?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
        .min(MAX_REQUEST);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(length);
    Some(Received {
        request_line,
        headers,
        body,
    })
}

async fn write_answer(stream: &mut TcpStream, answer: &Answer) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {} Scripted\r\nconnection: close\r\n",
        answer.status
    );
    for (n, v) in &answer.headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    match &answer.body {
        Body::Bytes(bytes) => {
            head.push_str(&format!("content-length: {}\r\n\r\n", bytes.len()));
            stream.write_all(head.as_bytes()).await?;
            stream.write_all(bytes).await
        }
        Body::Trickle {
            total,
            chunk,
            every,
            announce,
        } => {
            if *announce {
                head.push_str(&format!("content-length: {total}\r\n"));
            }
            head.push_str("\r\n");
            stream.write_all(head.as_bytes()).await?;
            let block = vec![b'x'; (*chunk).max(1)];
            let mut sent = 0;
            while sent < *total {
                let n = block.len().min(total - sent);
                stream.write_all(&block[..n]).await?;
                sent += n;
                if !every.is_zero() {
                    tokio::time::sleep(*every).await;
                }
            }
            Ok(())
        }
    }
}
