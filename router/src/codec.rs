//! The HTTP/1.1 byte codec of the router: which request heads the inference fast path
//! serves itself (every other request is hyper's), the inference paths it recognises,
//! the header names the router adds or reads, and the bytes of answer heads (decimal
//! numbers and the cached `Date` value included). A leaf: it imports nothing from the
//! rest of the router; the fast path (`http1`), the inference service (`infer`) and the
//! worker client (`upstream`) import it.
//!
//! The fast path takes only the plainest form of the hot request — `POST` of an infer
//! path over HTTP/1.1 with one `Content-Length` no larger than the body limit — and
//! leaves everything that needs judgement (chunked or missing framing, `Expect`,
//! `Upgrade`, HTTP/1.0, odd paths, malformed heads) to hyper, which serves the rest of
//! that connection exactly as it serves every other route.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use http::StatusCode;

/// Header naming the worker that answered.
pub const WORKER_HEADER: &str = "x-shardline-worker";
/// Header by which a client sets its deadline, in milliseconds.
pub const DEADLINE_HEADER: &str = "x-shardline-deadline-ms";
/// Header naming the entity a request is about: with a sticky canary, one key always
/// gets one version (see `shardline_shared::rollout`).
pub const ROUTE_KEY_HEADER: &str = "x-shardline-route-key";
/// Header giving the JSON part's length of a body with binary tensor data (the binary
/// tensor data extension), in requests and answers.
pub use shardline_shared::decode::INFERENCE_HEADER;

/// The model and version named by an inference path: `/v2/models/{model}/infer` or
/// `/v2/models/{model}/versions/{version}/infer`. `None` for any other path, for paths
/// whose segments would need percent-decoding, and for segments with a character a URI
/// path may not hold (`"`, `<`, `{`, `?`, `#`, …: `httparse` lets them through, hyper
/// refuses them with 400): those take the general route, so both read a path alike.
pub fn infer_route(path: &str) -> Option<(&str, Option<&str>)> {
    let rest = path.strip_prefix("/v2/models/")?.strip_suffix("/infer")?;
    let plain = |s: &str| !s.is_empty() && s.bytes().all(plain_path_byte);
    let mut segments = rest.split('/');
    let model = segments.next().filter(|m| plain(m))?;
    match (segments.next(), segments.next(), segments.next()) {
        (None, _, _) => Some((model, None)),
        (Some("versions"), Some(version), None) if plain(version) => Some((model, Some(version))),
        _ => None,
    }
}

/// A byte a path segment may hold as it is (RFC 3986 `pchar` without `%`-escapes:
/// unreserved characters and sub-delimiters, `:` and `@`).
fn plain_path_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&b)
}

/// An inference request head the fast path serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InferHead<'a> {
    pub model: &'a str,
    pub version: Option<&'a str>,
    pub content_length: usize,
    /// The first `Authorization` value, if any.
    pub authorization: Option<&'a [u8]>,
    /// The first `x-shardline-deadline-ms` value, if any.
    pub deadline: Option<&'a [u8]>,
    /// The first `Inference-Header-Content-Length` value, if any (binary tensor data).
    pub header_length: Option<&'a [u8]>,
    /// The first `x-shardline-route-key` value, if any.
    pub route_key: Option<&'a [u8]>,
    /// The client asked to close the connection after this answer.
    pub close: bool,
}

/// The fast path's reading of a complete request head: `Some` for an inference request
/// it serves, `None` for anything hyper should serve (see the module documentation).
pub fn classify<'b>(req: &httparse::Request<'_, 'b>, max_body: usize) -> Option<InferHead<'b>> {
    if req.method? != "POST" || req.version? != 1 {
        return None;
    }
    let (model, version) = infer_route(req.path?)?;
    let mut head = InferHead {
        model,
        version,
        content_length: 0,
        authorization: None,
        deadline: None,
        header_length: None,
        route_key: None,
        close: false,
    };
    let mut length = None;
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            if length.is_some() {
                return None;
            }
            length = Some(content_length(h.value)?);
        } else if name.eq_ignore_ascii_case("authorization") {
            head.authorization.get_or_insert(h.value);
        } else if name.eq_ignore_ascii_case(DEADLINE_HEADER) {
            head.deadline.get_or_insert(h.value);
        } else if name.eq_ignore_ascii_case(INFERENCE_HEADER) {
            head.header_length.get_or_insert(h.value);
        } else if name.eq_ignore_ascii_case(ROUTE_KEY_HEADER) {
            head.route_key.get_or_insert(h.value);
        } else if name.eq_ignore_ascii_case("connection") {
            head.close |= h
                .value
                .split(|&b| b == b',')
                .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"close"));
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            || name.eq_ignore_ascii_case("expect")
            || name.eq_ignore_ascii_case("upgrade")
        {
            return None;
        }
    }
    head.content_length = length.filter(|&n| n <= max_body)?;
    Some(head)
}

/// A `Content-Length` value: digits only (surrounding blanks allowed), no overflow.
fn content_length(value: &[u8]) -> Option<usize> {
    let digits = value.trim_ascii();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    digits.iter().try_fold(0usize, |n, &d| {
        n.checked_mul(10)?.checked_add(usize::from(d - b'0'))
    })
}

/// Appends an answer's status line and head (ending with the blank line) to `out`:
/// `headers` as given, then `content-length`, `date` and — when the connection closes
/// after it — `connection: close`.
pub fn write_head<'h>(
    out: &mut Vec<u8>,
    status: StatusCode,
    headers: impl IntoIterator<Item = (&'h str, &'h [u8])>,
    body_len: usize,
    date: &[u8],
    close: bool,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("Unknown").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"content-length: ");
    push_decimal(out, body_len as u64);
    out.extend_from_slice(b"\r\ndate: ");
    out.extend_from_slice(date);
    if close {
        out.extend_from_slice(b"\r\nconnection: close");
    }
    out.extend_from_slice(b"\r\n\r\n");
}

/// Appends `n` in decimal (without going through `fmt`).
pub fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
}

thread_local! {
    /// The second and its formatted `Date` value, refreshed when the second changes.
    static DATE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// Calls `f` with the `Date` header value for now (IMF-fixdate, formatted at most once
/// a second per thread).
pub fn with_date<R>(f: impl FnOnce(&[u8]) -> R) -> R {
    let now = SystemTime::now();
    let second = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    DATE.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != second {
            *cached = (second, httpdate::fmt_http_date(now));
        }
        f(cached.1.as_bytes())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse_and_classify(raw: &[u8], max_body: usize) -> Option<InferHead<'_>> {
        let headers = Box::leak(Box::new([httparse::EMPTY_HEADER; 32]));
        let mut req = httparse::Request::new(headers);
        assert!(req.parse(raw).unwrap().is_complete());
        classify(&req, max_body)
    }

    #[test]
    fn takes_the_plain_infer_request() {
        let raw = b"POST /v2/models/risk/versions/3/infer HTTP/1.1\r\nHost: x\r\n\
            Authorization: Bearer k1\r\nAuthorization: Bearer k2\r\nContent-Length: 12\r\n\
            X-Shardline-Deadline-Ms: 250\r\nConnection: keep-alive, Close\r\n\
            Inference-Header-Content-Length: 7\r\nX-Shardline-Route-Key: user-9\r\n\r\n";
        assert_eq!(
            parse_and_classify(raw, 100),
            Some(InferHead {
                model: "risk",
                version: Some("3"),
                content_length: 12,
                authorization: Some(&b"Bearer k1"[..]),
                deadline: Some(&b"250"[..]),
                header_length: Some(&b"7"[..]),
                route_key: Some(&b"user-9"[..]),
                close: true,
            })
        );
        let raw = b"POST /v2/models/risk/infer HTTP/1.1\r\ncontent-length: 0\r\n\r\n";
        let head = parse_and_classify(raw, 100).unwrap();
        assert_eq!(
            (head.model, head.version, head.close),
            ("risk", None, false)
        );
    }

    #[test]
    fn leaves_everything_else_to_hyper() {
        for raw in [
            &b"GET /v2/models/risk/infer HTTP/1.1\r\ncontent-length: 2\r\n\r\n"[..],
            b"POST /v2/models/risk/infer HTTP/1.0\r\ncontent-length: 2\r\n\r\n",
            b"POST /v2/models/risk/ready HTTP/1.1\r\ncontent-length: 2\r\n\r\n",
            b"POST /v2/models/ri%73k/infer HTTP/1.1\r\ncontent-length: 2\r\n\r\n",
            b"POST /v2/models/risk/infer?x=1 HTTP/1.1\r\ncontent-length: 2\r\n\r\n",
            b"POST /v2/models/risk/infer HTTP/1.1\r\n\r\n",
            b"POST /v2/models/risk/infer HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n",
            b"POST /v2/models/risk/infer HTTP/1.1\r\ncontent-length: 2\r\nexpect: 100-continue\r\n\r\n",
            b"POST /v2/models/risk/infer HTTP/1.1\r\ncontent-length: 2\r\nupgrade: h2c\r\n\r\n",
            b"POST /v2/models/risk/infer HTTP/1.1\r\ncontent-length: 2\r\ncontent-length: 2\r\n\r\n",
            b"POST /v2/models/risk/infer HTTP/1.1\r\ncontent-length: +2\r\n\r\n",
            b"POST /v2/models/risk/infer HTTP/1.1\r\ncontent-length: 2 2\r\n\r\n",
            b"POST /v2/models/risk/infer HTTP/1.1\r\ncontent-length: 99999999999999999999\r\n\r\n",
            b"POST /v2/models/risk/infer HTTP/1.1\r\ncontent-length: 101\r\n\r\n",
        ] {
            assert_eq!(
                parse_and_classify(raw, 100),
                None,
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    proptest! {
        #[test]
        fn decimals_are_written_like_display(n in any::<u64>()) {
            let mut out = b"x".to_vec();
            push_decimal(&mut out, n);
            prop_assert_eq!(out, format!("x{n}").into_bytes());
        }

        /// Whatever length is accepted is exactly the one the header states.
        #[test]
        fn content_length_is_read_exactly(n in any::<u64>(), pad in "[ \t]{0,2}") {
            let text = format!("{pad}{n}{pad}");
            let expected = usize::try_from(n).ok();
            prop_assert_eq!(content_length(text.as_bytes()), expected);
        }

        /// What `write_head` writes is a complete HTTP/1.1 answer head that a standard
        /// parser reads back with the same status, headers, length and framing.
        #[test]
        fn answers_parse_back(
            status in 200u16..600,
            headers in proptest::collection::vec(("[a-z][a-z-]{0,15}", "[ -~]{0,30}"), 0..6),
            body_len in any::<u32>(),
            close in any::<bool>(),
        ) {
            let status = StatusCode::from_u16(status).unwrap();
            let headers: Vec<(String, String)> = headers
                .into_iter()
                .map(|(n, v)| (format!("x-{n}"), v.trim().to_owned()))
                .collect();
            let mut out = Vec::new();
            let date = with_date(<[u8]>::to_vec);
            write_head(
                &mut out,
                status,
                headers.iter().map(|(n, v)| (n.as_str(), v.as_bytes())),
                body_len as usize,
                &date,
                close,
            );
            let mut parsed = [httparse::EMPTY_HEADER; 16];
            let mut response = httparse::Response::new(&mut parsed);
            prop_assert_eq!(response.parse(&out).unwrap(), httparse::Status::Complete(out.len()));
            prop_assert_eq!(response.code, Some(status.as_u16()));
            prop_assert_eq!(response.version, Some(1));
            let got: Vec<(&str, &[u8])> = response.headers.iter().map(|h| (h.name, h.value)).collect();
            let mut expected: Vec<(&str, &[u8])> =
                headers.iter().map(|(n, v)| (n.as_str(), v.as_bytes())).collect();
            let length = body_len.to_string();
            expected.push(("content-length", length.as_bytes()));
            expected.push(("date", &date));
            if close {
                expected.push(("connection", b"close"));
            }
            prop_assert_eq!(got, expected);
        }
    }

    #[test]
    fn matches_the_two_infer_paths_only() {
        assert_eq!(infer_route("/v2/models/risk/infer"), Some(("risk", None)));
        assert_eq!(
            infer_route("/v2/models/risk/versions/3/infer"),
            Some(("risk", Some("3")))
        );
        for other in [
            "/v2/models/risk",
            "/v2/models//infer",
            "/v2/models/risk/infer/",
            "/v2/models/a/b/infer",
            "/v2/models/risk/versions//infer",
            "/v2/models/risk/versions/3/x/infer",
            "/v2/models/ri%73k/infer",
            "/v2/models/risk/versions/>/infer",
            "/v2/models/a?b/infer",
            "/v2/models/{a}/infer",
            "/v2/models/risk/ready",
            "/v2/health/ready",
        ] {
            assert_eq!(infer_route(other), None, "{other}");
        }
    }

    proptest! {
        /// Whatever the fast path accepts, the names it returns are exactly what axum's
        /// `{model}` / `{version}` segments would capture, so both routes agree.
        #[test]
        fn agrees_with_segment_splitting(
            model in "[a-zA-Z0-9._%/-]{0,12}",
            version in proptest::option::of("[a-zA-Z0-9._%/-]{0,6}"),
        ) {
            let path = match &version {
                Some(v) => format!("/v2/models/{model}/versions/{v}/infer"),
                None => format!("/v2/models/{model}/infer"),
            };
            if let Some((m, v)) = infer_route(&path) {
                let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
                prop_assert!(!m.contains(['/', '%']) && !m.is_empty());
                match v {
                    None => prop_assert_eq!(segments, vec!["v2", "models", m, "infer"]),
                    Some(v) => {
                        prop_assert!(!v.contains(['/', '%']) && !v.is_empty());
                        prop_assert_eq!(segments, vec!["v2", "models", m, "versions", v, "infer"]);
                    }
                }
            }
        }
    }

    #[test]
    fn the_date_is_an_http_date_of_now() {
        let date = with_date(|d| String::from_utf8(d.to_vec()).unwrap());
        let parsed = httpdate::parse_http_date(&date).unwrap();
        let off = SystemTime::now().duration_since(parsed).unwrap();
        assert!(off.as_secs() < 2, "{date}");
    }
}
