//! A webhook receiver for alert tests.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A webhook receiver on a local port: answers 500 to the first `fail_first`
/// POSTs and 200 to the rest, keeping the bodies it accepted.
pub struct Receiver {
    pub url: String,
    pub accepted: Arc<Mutex<Vec<serde_json::Value>>>,
    pub posts: Arc<AtomicUsize>,
}

impl Receiver {
    pub async fn start(fail_first: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks/T0KEN", listener.local_addr().unwrap());
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let posts = Arc::new(AtomicUsize::new(0));
        let (a, p) = (accepted.clone(), posts.clone());
        tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(serve(socket, fail_first, a.clone(), p.clone()));
            }
        });
        Self {
            url,
            accepted,
            posts,
        }
    }

    pub fn accepted(&self) -> Vec<serde_json::Value> {
        self.accepted.lock().unwrap().clone()
    }
}

/// Answers the requests of one connection (HTTP/1.1, kept alive).
async fn serve(
    mut socket: TcpStream,
    fail_first: usize,
    accepted: Arc<Mutex<Vec<serde_json::Value>>>,
    posts: Arc<AtomicUsize>,
) {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match socket.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        assert!(head.starts_with("post /hooks/t0ken "), "{head}");
        assert!(head.contains("content-type: application/json"), "{head}");
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse().unwrap());
        while buf.len() < head_end + length {
            if matches!(socket.read_buf(&mut buf).await, Ok(0) | Err(_)) {
                return;
            }
        }
        let body: serde_json::Value =
            serde_json::from_slice(&buf[head_end..head_end + length]).unwrap();
        buf.drain(..head_end + length);
        let status = if posts.fetch_add(1, Ordering::SeqCst) < fail_first {
            "500 Internal Server Error"
        } else {
            accepted.lock().unwrap().push(body);
            "200 OK"
        };
        let answer = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n");
        if socket.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
    }
}
