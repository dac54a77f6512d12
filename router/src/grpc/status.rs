//! The gRPC status of every refusal, chosen in one place ([`code_for`]) from the HTTP
//! status the same refusal has over HTTP — the router's own ([`crate::error`]) and a
//! worker's answer alike — with the same message; and `grpc-timeout`
//! ([`parse_grpc_timeout`]), the client's deadline. Pure.

use std::time::Duration;

use http::StatusCode;
use serde::Deserialize;
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

use crate::error::RouterError;
use crate::upstream::Answer;

/// The gRPC code of a refusal the HTTP API answers with `status`.
pub fn code_for(status: StatusCode) -> Code {
    match status.as_u16() {
        400 => Code::InvalidArgument,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::NotFound,
        405 | 501 => Code::Unimplemented,
        // The request (its body, or its whole life) took longer than allowed.
        408 | 504 => Code::DeadlineExceeded,
        // Too large a request, too many of them, or too little memory for the model.
        413 | 429 | 431 | 507 => Code::ResourceExhausted,
        499 => Code::Cancelled,
        502 | 503 => Code::Unavailable,
        s if (400..500).contains(&s) => Code::FailedPrecondition,
        _ => Code::Internal,
    }
}

/// The router's refusal as a gRPC status: its HTTP status's code, its message, and
/// `retry-after` (seconds) when the HTTP answer has that header.
pub fn from_router_error(e: &RouterError) -> Status {
    let mut status = Status::new(code_for(e.status()), e.to_string());
    let retry_after = match e {
        RouterError::TooManyRequests { retry_after, .. } => Some(*retry_after),
        RouterError::Unavailable(_) => Some(Duration::from_secs(1)),
        _ => None,
    };
    if let Some(after) = retry_after {
        let secs = after.as_secs_f64().ceil().max(1.0) as u64;
        status
            .metadata_mut()
            .insert("retry-after", MetadataValue::from(secs));
    }
    status
}

/// A worker's refusal (any status but 200) as a gRPC status: its code, the `error` of
/// its JSON body as the message, its `Retry-After`.
pub fn from_worker_answer(answer: &Answer) -> Status {
    #[derive(Deserialize)]
    struct Refusal {
        error: String,
    }
    let message = serde_json::from_slice::<Refusal>(&answer.body)
        .map(|r| r.error)
        .unwrap_or_else(|_| format!("worker answered {}", answer.status));
    let mut status = Status::new(code_for(answer.status), message);
    if let Some(v) = answer
        .retry_after
        .as_ref()
        .and_then(|v| MetadataValue::try_from(v.as_bytes()).ok())
    {
        status.metadata_mut().insert("retry-after", v);
    }
    status
}

/// A `grpc-timeout` value (1 to 8 digits and a unit: `H`, `M`, `S`, `m`, `u`, `n`), or
/// `None` when it is not one.
pub fn parse_grpc_timeout(value: &[u8]) -> Option<Duration> {
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// A deadline as whole milliseconds, rounded up (at least 1): the value the inference
/// service reads from `x-shardline-deadline-ms`.
pub fn deadline_ms(d: Duration) -> u64 {
    let ms = d.as_nanos().div_ceil(1_000_000);
    u64::try_from(ms).unwrap_or(u64::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn every_router_refusal_has_its_code_and_message() {
        let cases = [
            (RouterError::Unauthorized, Code::Unauthenticated),
            (
                RouterError::NotFound("model \"x\" not found".into()),
                Code::NotFound,
            ),
            (RouterError::BadRequest("bad".into()), Code::InvalidArgument),
            (RouterError::TooLarge(10), Code::ResourceExhausted),
            (RouterError::BodyTimeout, Code::DeadlineExceeded),
            (
                RouterError::TooManyRequests {
                    message: "over".into(),
                    retry_after: Duration::from_millis(1500),
                },
                Code::ResourceExhausted,
            ),
            (RouterError::Unavailable("none".into()), Code::Unavailable),
            (
                RouterError::DeadlineExceeded(Duration::from_millis(5)),
                Code::DeadlineExceeded,
            ),
        ];
        for (e, code) in cases {
            let s = from_router_error(&e);
            assert_eq!(s.code(), code, "{e:?}");
            assert_eq!(s.message(), e.to_string());
        }
        let s = from_router_error(&RouterError::TooManyRequests {
            message: "over".into(),
            retry_after: Duration::from_millis(1500),
        });
        assert_eq!(s.metadata().get("retry-after").unwrap(), "2");
    }

    #[test]
    fn worker_refusals_keep_their_message() {
        let answer = |status: u16, body: &'static str| Answer {
            status: StatusCode::from_u16(status).unwrap(),
            content_type: None,
            retry_after: None,
            header_length: None,
            body: body.into(),
        };
        let s = from_worker_answer(&answer(507, r#"{"error":"model needs more memory"}"#));
        assert_eq!(s.code(), Code::ResourceExhausted);
        assert_eq!(s.message(), "model needs more memory");
        let s = from_worker_answer(&answer(500, "<html>"));
        assert_eq!(s.code(), Code::Internal);
        assert!(s.message().contains("500"), "{}", s.message());
        assert_eq!(code_for(StatusCode::BAD_GATEWAY), Code::Unavailable);
        assert_eq!(code_for(StatusCode::IM_A_TEAPOT), Code::FailedPrecondition);
    }

    #[test]
    fn grpc_timeouts() {
        assert_eq!(parse_grpc_timeout(b"1H"), Some(Duration::from_secs(3600)));
        assert_eq!(
            parse_grpc_timeout(b"250m"),
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            parse_grpc_timeout(b"99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
        for bad in [
            &b""[..],
            b"m",
            b"123456789m",
            b"12x",
            b"-1S",
            b"1.5S",
            b"1 S",
        ] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
        assert_eq!(deadline_ms(Duration::from_micros(1)), 1);
        assert_eq!(deadline_ms(Duration::from_micros(1001)), 2);
        assert_eq!(deadline_ms(Duration::from_secs(3)), 3000);
    }

    proptest! {
        #[test]
        fn timeouts_round_trip_and_garbage_never_panics(
            n in 0u64..100_000_000,
            unit in prop::sample::select(vec!['H', 'M', 'S', 'm', 'u', 'n']),
            junk in prop::collection::vec(any::<u8>(), 0..12),
        ) {
            let per = match unit {
                'H' => Duration::from_secs(3600),
                'M' => Duration::from_secs(60),
                'S' => Duration::from_secs(1),
                'm' => Duration::from_millis(1),
                'u' => Duration::from_micros(1),
                _ => Duration::from_nanos(1),
            };
            let parsed = parse_grpc_timeout(format!("{n}{unit}").as_bytes());
            prop_assert_eq!(parsed, Some(per * u32::try_from(n).unwrap()));
            let _ = parse_grpc_timeout(&junk);
        }
    }
}
