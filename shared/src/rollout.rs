//! Which version serves a request that names none: the live version, or a canary's
//! share of the traffic ([`Canary`], kept in the live pointer so that promotion and
//! abort are one compare-and-swap each).
//!
//! A share is in basis points (1/100 of a percent), so `--percent 0.25` is exact and no
//! float is stored. Without stickiness each request draws; with it, a request carrying
//! a route key (`x-shardline-route-key`) lands in a bucket computed from that key and
//! the model's name with a fixed hash, the same on every router and release, so one end
//! user of a tenant keeps seeing one version while the share is unchanged, and
//! raising the share only moves keys from live to canary.

use serde::{Deserialize, Serialize};
use siphasher::sip::SipHasher13;
use std::hash::Hasher;

use crate::ids::{ModelKey, VersionId};

/// Basis points in the whole: a canary at `FULL` takes every unpinned request.
pub const FULL: u32 = 10_000;

/// A candidate version that takes `basis_points` of the requests naming no version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Canary {
    pub version: VersionId,
    /// Share of unpinned requests, in 1/100 of a percent (`1000` = 10 %).
    pub basis_points: u32,
    /// Requests with a route key always land on the same version.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sticky: bool,
}

impl Canary {
    /// Whether a request goes to the canary: `route_key` is the request's entity key,
    /// `draw` a uniformly random number (used unless the canary is sticky and a key is
    /// given).
    pub fn takes(&self, model: &ModelKey, route_key: Option<&[u8]>, draw: u64) -> bool {
        let bucket = match (self.sticky, route_key) {
            (true, Some(key)) => bucket(model, key),
            _ => draw % u64::from(FULL),
        };
        bucket < u64::from(self.basis_points.min(FULL))
    }

    /// The share as a percentage, for people: `10`, `0.25`.
    pub fn percent(&self) -> String {
        format_percent(self.basis_points)
    }
}

/// A version that also scores a sample of the requests that name no version, after
/// their answer and for comparison only: its answers never reach a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shadow {
    pub version: VersionId,
    /// Share of unpinned requests copied to it, in 1/100 of a percent.
    pub basis_points: u32,
}

impl Shadow {
    /// Whether a request with the uniformly random `draw` is copied.
    pub fn samples(&self, draw: u64) -> bool {
        draw % u64::from(FULL) < u64::from(self.basis_points.min(FULL))
    }
}

/// The sticky bucket of `key` for `model`, in `0..FULL`. SipHash-1-3 with fixed keys:
/// stable across processes and releases (a change would move users between versions).
pub fn bucket(model: &ModelKey, key: &[u8]) -> u64 {
    let mut h = SipHasher13::new_with_keys(0x5348_4152_444c_494e, 0x4341_4e41_5259_0001);
    h.write(model.tenant.as_str().as_bytes());
    h.write_u8(b'/');
    h.write(model.model.as_str().as_bytes());
    h.write_u8(0);
    h.write(key);
    h.finish() % u64::from(FULL)
}

/// Why a percentage was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("percent must be a number from 0 to 100 with at most two decimals, not {0:?}")]
pub struct PercentError(String);

/// Parses `10`, `0.5`, `12.25` into basis points.
pub fn parse_percent(s: &str) -> Result<u32, PercentError> {
    let refuse = || PercentError(crate::echo::Echo(s).to_string());
    let (whole, frac) = match s.trim().split_once('.') {
        Some((_, "")) => return Err(refuse()),
        Some(parts) => parts,
        None => (s.trim(), ""),
    };
    let digits = |d: &str| d.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || whole.len() > 3 || frac.len() > 2 || !digits(whole) || !digits(frac) {
        return Err(refuse());
    }
    let whole: u32 = whole.parse().map_err(|_| refuse())?;
    let frac: u32 = format!("{frac:0<2}").parse().map_err(|_| refuse())?;
    let bp = whole * 100 + frac;
    if bp > FULL {
        return Err(refuse());
    }
    Ok(bp)
}

/// Basis points as a percentage without trailing zeros: `1000` → `10`, `25` → `0.25`.
pub fn format_percent(basis_points: u32) -> String {
    let (whole, frac) = (basis_points / 100, basis_points % 100);
    match frac {
        0 => whole.to_string(),
        f if f % 10 == 0 => format!("{whole}.{}", f / 10),
        f => format!("{whole}.{f:02}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{ModelName, TenantId};
    use proptest::prelude::*;

    fn model(t: &str) -> ModelKey {
        ModelKey::new(TenantId::new(t).unwrap(), ModelName::new("risk").unwrap())
    }

    fn canary(bp: u32, sticky: bool) -> Canary {
        Canary {
            version: VersionId::new("2").unwrap(),
            basis_points: bp,
            sticky,
        }
    }

    #[test]
    fn percentages_parse_exactly_and_print_back() {
        for (s, bp) in [
            ("0", 0),
            ("10", 1000),
            ("0.5", 50),
            ("12.25", 1225),
            ("100", FULL),
        ] {
            assert_eq!(parse_percent(s), Ok(bp), "{s}");
            assert_eq!(parse_percent(&format_percent(bp)), Ok(bp));
        }
        for bad in [
            "", "-1", "100.01", "101", "1e2", "0.125", "ten", ".5", "5.", "1000",
        ] {
            let err = parse_percent(bad).unwrap_err().to_string();
            assert!(err.contains("0 to 100"), "{bad}: {err}");
        }
    }

    #[test]
    fn unpinned_draws_split_at_the_share() {
        let c = canary(1000, false);
        let mut rng = fastrand::Rng::with_seed(1);
        let n = 100_000;
        let hits = (0..n)
            .filter(|_| c.takes(&model("a"), None, rng.u64(..)))
            .count();
        let share = hits as f64 / n as f64;
        assert!((share - 0.10).abs() < 0.005, "{share}");
        assert!(!canary(0, false).takes(&model("a"), None, 0));
        assert!(canary(FULL, false).takes(&model("a"), None, u64::MAX));
    }

    #[test]
    fn sticky_keys_split_at_the_share_too() {
        let c = canary(2500, true);
        let n = 40_000;
        let hits = (0..n)
            .filter(|i| c.takes(&model("a"), Some(format!("user-{i}").as_bytes()), 0))
            .count();
        let share = hits as f64 / n as f64;
        assert!((share - 0.25).abs() < 0.01, "{share}");
    }

    proptest! {
        /// With a key, a sticky canary ignores the draw; raising the share never moves a
        /// key back to live; without stickiness or a key, the draw decides.
        #[test]
        fn a_sticky_key_sees_one_version(
            key in prop::collection::vec(any::<u8>(), 0..40),
            bp in 0..=FULL, more in 0..=FULL, d1: u64, d2: u64,
        ) {
            let m = model("acme");
            let c = canary(bp, true);
            prop_assert_eq!(c.takes(&m, Some(&key), d1), c.takes(&m, Some(&key), d2));
            if c.takes(&m, Some(&key), d1) {
                prop_assert!(canary(bp.max(more), true).takes(&m, Some(&key), d2));
            }
            let loose = canary(bp, false);
            prop_assert_eq!(loose.takes(&m, Some(&key), d1), d1 % u64::from(FULL) < u64::from(bp));
            prop_assert_eq!(c.takes(&m, None, d1), loose.takes(&m, None, d1));
        }
    }
}
