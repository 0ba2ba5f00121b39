#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use super::*;

#[test]
fn completion_windows_are_written_as_the_api_takes_them() {
    assert_eq!(window_text(Duration::from_secs(24 * 3600)), "24h");
    assert_eq!(window_text(Duration::from_secs(90)), "90s");
    assert_eq!(window_text(Duration::ZERO), "1s");
}

#[test]
fn batch_errors_say_whether_to_try_again_and_whether_the_call_may_have_landed() {
    let status = |status| BatchError::Status {
        api: "openai",
        status,
        message: "m".into(),
    };
    assert!(status(429).is_retryable() && status(503).is_retryable());
    assert!(!status(400).is_retryable() && !status(401).is_retryable());
    assert!(!status(400).may_have_reached());
    assert!(status(502).may_have_reached());
    let gone = BatchError::Unreachable {
        api: "anthropic",
        message: "reset".into(),
    };
    assert!(gone.is_retryable() && gone.may_have_reached());
    assert!(gone.to_string().contains("tried again"), "{gone}");
}

#[test]
fn only_openai_and_anthropic_deployments_get_a_batch_api() {
    let provider = |api| {
        Arc::new(
            HttpProvider::new(
                crate::wire::for_api(api),
                Some("http://127.0.0.1:9/v1"),
                None,
                switchyard_core::config::Timeouts::default(),
            )
            .unwrap(),
        )
    };
    assert_eq!(
        for_api(Api::Openai, provider(Api::Openai)).unwrap().kind(),
        "openai"
    );
    assert_eq!(
        for_api(Api::Anthropic, provider(Api::Anthropic))
            .unwrap()
            .kind(),
        "anthropic"
    );
    assert!(for_api(Api::Gemini, provider(Api::Gemini)).is_none());
    assert!(for_api(Api::OpenaiCompatible, provider(Api::OpenaiCompatible)).is_none());
}
