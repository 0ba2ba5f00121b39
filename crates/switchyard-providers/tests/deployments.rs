//! Deployments built from a pipeline config: keys read from `api_key_file`
//! (trimmed, sent only in the auth header, never shown), a clear error naming the
//! file when it is missing, and the catalog's unsupported request parameters left
//! out of what the adapter sends, with stop sequences applied to the answer.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use serde_json::Value;
use switchyard_core::config::LoadedPipeline;
use switchyard_core::job::{ChatRequest, ResponseFormat};
use switchyard_providers::{BuildError, CallRequest, build_deployments};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const KEY: &str = "sk-file-9QwErTy7uIoP3aSdF";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn config(dir: &Path, base_url: &str, key_file: &Path) -> LoadedPipeline {
    let text = format!(
        r#"catalog = "{catalog}"
org = "{org}"
[kafka]
brokers = "127.0.0.1:9092"
[routing]
baseline_model = "claude-opus-5-5"
[[deployments]]
name = "reasoning"
model = "gpt-5-nano"
base_url = "{base_url}"
api_key_file = "{key_file}"
[[deployments]]
name = "classic"
model = "gpt-4.1-nano"
base_url = "{base_url}"
api_key_file = "{key_file}"
"#,
        catalog = root().join("pipelines/models.toml").display(),
        org = root().join("pipelines/org.toml").display(),
        key_file = key_file.display(),
    );
    let path = dir.join("pipeline.toml");
    std::fs::write(&path, text).unwrap();
    switchyard_loader::load_pipeline(&path, &[]).unwrap()
}

/// One HTTP exchange: returns the request head and body, answers `reply`.
async fn serve_once(listener: &TcpListener, reply: String) -> (String, Value) {
    serve_status_once(listener, "200 OK", reply).await
}

/// As [`serve_once`], with `status` ("401 Unauthorized") on the answer.
async fn serve_status_once(listener: &TcpListener, status: &str, reply: String) -> (String, Value) {
    let (mut socket, _) = listener.accept().await.unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let (head, body) = loop {
        let n = socket.read(&mut buf).await.unwrap();
        raw.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&raw).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if body.len() >= length {
                break (head.to_owned(), body.to_owned());
            }
        }
    };
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reply}",
        reply.len()
    );
    socket.write_all(response.as_bytes()).await.unwrap();
    socket.shutdown().await.unwrap();
    (head, serde_json::from_str(&body).unwrap())
}

fn reply(content: &str) -> String {
    serde_json::json!({
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "length"}],
        "usage": {"prompt_tokens": 20, "completion_tokens": 30, "total_tokens": 50},
    })
    .to_string()
}

fn request() -> ChatRequest {
    ChatRequest {
        temperature: Some(0.2),
        stop: vec!["\n\n".into(), "END".into()],
        max_tokens: Some(64),
        response_format: ResponseFormat::Text,
        ..ChatRequest::from_user("List three colours.")
    }
}

#[tokio::test]
async fn keys_come_from_files_and_reasoning_models_get_only_what_they_accept() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("openai.key");
    // Mounted secrets often end with a newline.
    std::fs::write(&key_file, format!("{KEY}\n")).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = format!("http://{}/v1", listener.local_addr().unwrap());
    let p = config(dir.path(), &base_url, &key_file);
    let deployments = build_deployments(&p.config, &p.catalog).unwrap();
    for d in &deployments {
        assert!(!format!("{d:?}").contains(KEY));
        assert!(!format!("{:?}", d.client.kind()).contains(KEY));
    }
    let request = request();

    // gpt-5-nano refuses temperature and stop: neither is sent, and the answer is
    // cut at the first stop sequence as the API would have done.
    let reasoning = &deployments[0];
    let call = reasoning.client.complete(CallRequest {
        request: &request,
        api_model: &reasoning.api_model,
        default_max_tokens: None,
    });
    let (served, done) = tokio::join!(
        serve_once(&listener, reply("Red, green, blue.END Extra words\n\nMore")),
        call
    );
    let (head, body) = served;
    let done = done.unwrap();
    assert!(
        head.lines()
            .any(|l| l.eq_ignore_ascii_case(&format!("authorization: Bearer {KEY}"))),
        "the key from the file, newline trimmed: {head}"
    );
    assert_eq!(body["model"], "gpt-5-nano");
    assert!(body.get("temperature").is_none(), "{body}");
    assert!(body.get("stop").is_none(), "{body}");
    assert_eq!(body["max_completion_tokens"], 64);
    assert_eq!(done.content, "Red, green, blue.");
    assert_eq!(done.finish_reason, "stop");
    assert_eq!(
        done.usage.output_tokens, 30,
        "billing is what the API reported"
    );

    // gpt-4.1-nano takes both, and the server applies them.
    let classic = &deployments[1];
    let call = classic.client.complete(CallRequest {
        request: &request,
        api_model: &classic.api_model,
        default_max_tokens: None,
    });
    let (served, done) = tokio::join!(serve_once(&listener, reply("Red END x")), call);
    let body = served.1;
    assert_eq!(body["temperature"], 0.2);
    assert_eq!(body["stop"], serde_json::json!(["\n\n", "END"]));
    let done = done.unwrap();
    assert_eq!(done.content, "Red END x", "not cut: the server did it");
    assert_eq!(done.finish_reason, "length");
}

#[test]
fn a_missing_key_file_is_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("secrets/openai.key");
    let p = config(dir.path(), "http://127.0.0.1:9/v1", &missing);
    let e: BuildError = build_deployments(&p.config, &p.catalog).unwrap_err();
    assert_eq!(e.deployment, "reasoning");
    let text = e.to_string();
    assert!(
        text.contains(&missing.display().to_string()) && text.contains("cannot read key file"),
        "{text}"
    );
    assert!(text.contains("mount the key file"), "{text}");
}

/// A provider's answer is bounded in what it can put into a result or a
/// ledger: a huge unreadable body gives a short error, a key echoed across the
/// cut of an error message is removed whole, and a usage no call can bill is
/// refused as unreadable (retried, failed over) instead of settled.
#[tokio::test]
async fn hostile_answers_give_short_key_free_errors_and_no_absurd_bill() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("openai.key");
    std::fs::write(&key_file, KEY).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = format!("http://{}/v1", listener.local_addr().unwrap());
    let p = config(dir.path(), &base_url, &key_file);
    let deployments = build_deployments(&p.config, &p.catalog).unwrap();
    let d = &deployments[1];
    let request = request();
    let call = || {
        d.client.complete(CallRequest {
            request: &request,
            api_model: &d.api_model,
            default_max_tokens: None,
        })
    };

    // serde quotes the whole offending value in its message.
    let huge = serde_json::json!({"choices": "x".repeat(600_000)}).to_string();
    let (_, done) = tokio::join!(serve_once(&listener, huge), call());
    let e = done.unwrap_err();
    assert!(
        matches!(e, switchyard_providers::ProviderError::Decode(_)),
        "{e}"
    );
    assert!(e.is_retryable());
    assert!(e.to_string().len() < 600, "{} bytes", e.to_string().len());

    // A 401 whose message echoes the key where a cut at 500 bytes falls.
    let echo = format!("{} Bearer {KEY} is not valid", "y".repeat(480));
    let body = serde_json::json!({"error": {"message": echo, "type": "invalid_request_error"}});
    let (_, done) = tokio::join!(
        serve_status_once(&listener, "401 Unauthorized", body.to_string()),
        call()
    );
    let text = done.unwrap_err().to_string();
    assert!(text.contains("Bearer ***"), "{text}");
    assert!(!text.contains(&KEY[..6]), "no head of the key: {text}");

    // A bill of u64::MAX output tokens.
    let absurd = serde_json::json!({
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 20, "completion_tokens": u64::MAX, "total_tokens": 20},
    });
    let (_, done) = tokio::join!(serve_once(&listener, absurd.to_string()), call());
    let e = done.unwrap_err();
    assert!(
        matches!(e, switchyard_providers::ProviderError::Decode(ref m) if m.contains("implausible usage")),
        "{e}"
    );
    assert!(e.billed().is_zero());
}
