//! The 64 features of a synthetic authentication event, and a seeded sampler of events.
//!
//! An event is drawn from one of three contexts — a usual login, a legitimate traveller,
//! or a hostile one (credential stuffing, account takeover, bots) — and every feature is
//! then drawn given that context, so features are correlated the way real ones are (a
//! new device often comes with a new OS, a Tor exit with a bad ASN). Labels are not drawn
//! here: a tenant's ground-truth rule ([`super::tenant`]) looks only at the features.
//!
//! Every feature is normalised by a fixed transform, not by statistics of a dataset, so
//! that a row sampled later (by a load generator) is scaled exactly like training rows:
//! flags are 0/1, fractions are in `[0, 1]`, counts and durations are `ln(1 + v)` divided
//! by `ln(1 + typical maximum)` (about `[0, 1.5]`), angles are sin/cos, scores are z-scores.
//!
//! This module names the columns ([`Feature`]); [`EventSampler`] (in `sampler`) draws the
//! rows.

mod sampler;

pub use sampler::EventSampler;

/// Width of one event row.
pub const FEATURES: usize = 64;

/// One row: [`FEATURES`] normalised values, indexed by [`Feature`].
pub type Row = [f32; FEATURES];

macro_rules! features {
    ($($variant:ident => $name:literal, $doc:literal;)*) => {
        /// A column of the event row; `f as usize` is its index.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Feature { $(#[doc = $doc] $variant,)* }

        impl Feature {
            /// Every feature, in column order.
            pub const ALL: [Feature; FEATURES] = [$(Feature::$variant),*];

            /// The column's name (snake_case), for tables and docs.
            pub fn name(self) -> &'static str {
                match self { $(Feature::$variant => $name,)* }
            }
        }
    };
}

features! {
    HourSin => "hour_sin", "Local hour of the login, as sin(2π·h/24).";
    HourCos => "hour_cos", "Local hour of the login, as cos(2π·h/24).";
    WeekdaySin => "weekday_sin", "Day of the week, as sin(2π·d/7).";
    WeekdayCos => "weekday_cos", "Day of the week, as cos(2π·d/7).";
    HourUnusual => "hour_unusual", "Circular distance from the user's usual hour, / 12 (0–1).";
    NewDevice => "new_device", "Device never seen for this account (flag).";
    DeviceAge => "device_age", "Days since the device was first seen (log scale, 1000 d ≈ 1).";
    DeviceTrust => "device_trust", "Device reputation from the fingerprinting vendor (0–1, 1 good).";
    DeviceRooted => "device_rooted", "Rooted or jailbroken phone (flag).";
    Emulator => "emulator", "Emulator or virtual machine detected (flag).";
    HeadlessBrowser => "headless_browser", "Headless or automated browser detected (flag).";
    OsChanged => "os_changed", "Operating system differs from the account's last login (flag).";
    BrowserChanged => "browser_changed", "Browser family differs from the last login (flag).";
    UserAgentRarity => "user_agent_rarity", "How rare the user agent string is (0–1).";
    ScreenRarity => "screen_rarity", "How rare the screen resolution is (0–1).";
    GeoVelocity => "geo_velocity", "Speed implied by the last two login places, km/h (log, 1000 km/h ≈ 1).";
    GeoDistance => "geo_distance", "Distance from the last login place, km (log, 10000 km ≈ 1).";
    CountryChange => "country_change", "Country differs from the last login (flag).";
    ImpossibleTravel => "impossible_travel", "Implied speed above 900 km/h (flag).";
    TimezoneMismatch => "timezone_mismatch", "Browser time zone does not match the IP's (flag).";
    LanguageMismatch => "language_mismatch", "Browser language unusual for the account (flag).";
    AsnReputation => "asn_reputation", "Reputation of the IP's autonomous system (0–1, 1 good).";
    HostingAsn => "hosting_asn", "IP belongs to a hosting or cloud provider (flag).";
    TorExit => "tor_exit", "IP is a Tor exit node (flag).";
    Vpn => "vpn", "IP is a known VPN endpoint (flag).";
    IpReputation => "ip_reputation", "Abuse score of the IP itself (0–1, 1 bad).";
    IpAccounts24h => "ip_accounts_24h", "Distinct accounts tried from this IP in 24 h (log, 100 ≈ 1).";
    AccountIps24h => "account_ips_24h", "Distinct IPs used by this account in 24 h (log, 20 ≈ 1).";
    Failed1h => "failed_1h", "Failed password attempts on the account in the last hour (log, 20 ≈ 1).";
    Failed24h => "failed_24h", "Failed password attempts in the last day (log, 100 ≈ 1).";
    FailedMfa1h => "failed_mfa_1h", "Failed MFA challenges in the last hour (log, 10 ≈ 1).";
    AttemptsPerMin => "attempts_per_min", "Login attempts per minute from this client (log, 60 ≈ 1).";
    CaptchaScore => "captcha_score", "Human-likeness from the bot check (0–1, 1 human).";
    TypingCadence => "typing_cadence", "Password typing rhythm vs the user's own (z-score).";
    MouseEntropy => "mouse_entropy", "Entropy of pointer movement (0–1, 0 scripted).";
    PasswordAge => "password_age", "Days since the password was set (log, 1000 d ≈ 1).";
    PasswordResetRecent => "password_reset_recent", "Password reset in the last 24 h (flag).";
    PasswordBreached => "password_breached", "Password appears in a breach corpus (flag).";
    MfaEnrolled => "mfa_enrolled", "Account has a second factor enrolled (flag).";
    MfaUsed => "mfa_used", "This login passed a second factor (flag).";
    MfaStrength => "mfa_strength", "Strength of the factor used: 0 none, 0.5 SMS, 1 app or key.";
    SsoLogin => "sso_login", "Login through the customer's identity provider (flag).";
    ApiClient => "api_client", "Login by an API client rather than a browser or app (flag).";
    AccountAge => "account_age", "Days since the account was created (log, 1000 d ≈ 1).";
    Logins7d => "logins_7d", "Successful logins in the last 7 days (log, 50 ≈ 1).";
    SinceLastLogin => "since_last_login", "Hours since the last successful login (log, 1000 h ≈ 1).";
    ActiveSessions => "active_sessions", "Sessions currently open on the account (log, 10 ≈ 1).";
    Privileged => "privileged", "Administrator or otherwise privileged account (flag).";
    EmailChangeRecent => "email_change_recent", "E-mail address changed in the last 7 days (flag).";
    PhoneChangeRecent => "phone_change_recent", "Phone number changed in the last 7 days (flag).";
    PayoutChangeRecent => "payout_change_recent", "Payout or bank details changed in the last 7 days (flag).";
    TxnVolume => "txn_volume", "Value moved in the last 24 h, in local currency (log, 10000 ≈ 1).";
    EmailDomainRisk => "email_domain_risk", "Risk of the account's e-mail domain (0–1).";
    DisposableEmail => "disposable_email", "E-mail domain is a disposable-mail service (flag).";
    PrevSessionLength => "prev_session_length", "Length of the previous session, minutes (log, 600 ≈ 1).";
    RememberMe => "remember_me", "\"Remember me\" was ticked (flag).";
    CookiesDisabled => "cookies_disabled", "Client refuses cookies (flag).";
    ExternalReferrer => "external_referrer", "Login page reached from another site (flag).";
    NewCity => "new_city", "First login from this city (flag).";
    IspChange => "isp_change", "Internet provider differs from the last login (flag).";
    Weekend => "weekend", "Saturday or Sunday (flag).";
    HolidaySeason => "holiday_season", "Within a holiday period (flag).";
    SupportTicketRecent => "support_ticket_recent", "Support ticket about the account in the last 7 days (flag).";
    PriorFraud => "prior_fraud", "Account was involved in confirmed fraud before (flag).";
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_are_unique_snake_case_and_in_column_order() {
        let mut seen = std::collections::BTreeSet::new();
        for (i, f) in Feature::ALL.iter().enumerate() {
            assert_eq!(*f as usize, i);
            assert!(
                f.name()
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            );
            assert!(seen.insert(f.name()), "{} twice", f.name());
        }
    }

    #[test]
    fn every_feature_varies_and_stays_near_unit_scale() {
        let mut s = EventSampler::new(3, 0.15);
        let rows: Vec<Row> = (0..5000).map(|_| s.next_row()).collect();
        for f in Feature::ALL {
            let col: Vec<f32> = rows.iter().map(|r| r[f as usize]).collect();
            let (lo, hi) = col
                .iter()
                .fold((f32::MAX, f32::MIN), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
            assert!(lo < hi, "{} is constant", f.name());
            let mean = col.iter().map(|v| f64::from(*v)).sum::<f64>() / col.len() as f64;
            assert!(mean.abs() < 2.0, "{} mean {mean}", f.name());
            assert!(lo > -8.0 && hi < 8.0, "{} in [{lo}, {hi}]", f.name());
        }
    }

    proptest! {
        /// Same seed, same events; every value finite.
        #[test]
        fn events_are_deterministic(seed in any::<u64>(), rate in 0.0f64..0.5) {
            let mut a = EventSampler::new(seed, rate);
            let mut b = EventSampler::new(seed, rate);
            for _ in 0..8 {
                let (x, y) = (a.next_row(), b.next_row());
                prop_assert_eq!(x, y);
                prop_assert!(x.iter().all(|v| v.is_finite()));
            }
        }
    }
}
