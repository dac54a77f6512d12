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

use super::rng::Rng;

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

/// Where an event comes from; the features are drawn given this, the label is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Context {
    Usual,
    Traveller,
    Hostile,
}

/// Draws events; the share of hostile traffic is a property of the tenant's audience.
#[derive(Debug, Clone)]
pub struct EventSampler {
    rng: Rng,
    hostile_rate: f64,
}

/// Share of events from legitimate travellers.
const TRAVELLER_RATE: f64 = 0.06;

fn log_unit(v: f64, typical_max: f64) -> f64 {
    v.max(0.0).ln_1p() / typical_max.ln_1p()
}

fn flag(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

impl EventSampler {
    /// `hostile_rate` (clamped to `[0, 0.9]`) is the share of hostile events.
    pub fn new(seed: u64, hostile_rate: f64) -> Self {
        Self {
            rng: Rng::new(seed),
            hostile_rate: hostile_rate.clamp(0.0, 0.9),
        }
    }

    /// The next event.
    pub fn next_row(&mut self) -> Row {
        let r = &mut self.rng;
        let u = r.unit();
        let ctx = if u < self.hostile_rate {
            Context::Hostile
        } else if u < self.hostile_rate + TRAVELLER_RATE {
            Context::Traveller
        } else {
            Context::Usual
        };
        let hostile = ctx == Context::Hostile;
        let away = ctx != Context::Usual;
        // Hostile traffic is either a bot (scripted, many accounts) or a human taking over
        // one account; the two leave different traces.
        let bot = hostile && r.chance(0.55);
        let mut row = [0.0f32; FEATURES];
        let mut set = |f: Feature, v: f64| row[f as usize] = v as f32;

        let usual_hour = (14.0 + 3.5 * r.normal()).rem_euclid(24.0);
        let hour = if hostile {
            r.uniform(0.0, 24.0)
        } else {
            (usual_hour + 1.5 * r.normal()).rem_euclid(24.0)
        };
        let day = r.below(7) as f64;
        let hour_gap = (hour - usual_hour).abs();
        set(
            Feature::HourSin,
            (std::f64::consts::TAU * hour / 24.0).sin(),
        );
        set(
            Feature::HourCos,
            (std::f64::consts::TAU * hour / 24.0).cos(),
        );
        set(
            Feature::WeekdaySin,
            (std::f64::consts::TAU * day / 7.0).sin(),
        );
        set(
            Feature::WeekdayCos,
            (std::f64::consts::TAU * day / 7.0).cos(),
        );
        set(Feature::HourUnusual, hour_gap.min(24.0 - hour_gap) / 12.0);
        set(Feature::Weekend, flag(day >= 5.0));
        set(Feature::HolidaySeason, flag(r.chance(0.1)));

        let new_device = r.chance(match ctx {
            Context::Usual => 0.04,
            Context::Traveller => 0.15,
            Context::Hostile => 0.8,
        });
        let device_days = if new_device {
            0.0
        } else {
            r.exponential(300.0)
        };
        set(Feature::NewDevice, flag(new_device));
        set(Feature::DeviceAge, log_unit(device_days, 1000.0));
        let trust = if hostile {
            r.uniform(0.0, 0.6)
        } else {
            r.uniform(0.4, 1.0)
        };
        set(Feature::DeviceTrust, trust);
        set(
            Feature::DeviceRooted,
            flag(r.chance(if hostile { 0.2 } else { 0.02 })),
        );
        set(
            Feature::Emulator,
            flag(r.chance(if bot { 0.5 } else { 0.01 })),
        );
        set(
            Feature::HeadlessBrowser,
            flag(r.chance(if bot { 0.6 } else { 0.005 })),
        );
        set(Feature::OsChanged, flag(new_device && r.chance(0.6)));
        set(
            Feature::BrowserChanged,
            flag(r.chance(if new_device { 0.7 } else { 0.05 })),
        );
        set(
            Feature::UserAgentRarity,
            r.unit().powf(if bot { 0.3 } else { 3.0 }),
        );
        set(
            Feature::ScreenRarity,
            r.unit().powf(if bot { 0.5 } else { 3.0 }),
        );

        let (distance_km, hours_between) = match ctx {
            Context::Usual => (r.exponential(15.0), r.exponential(30.0) + 0.5),
            Context::Traveller => (r.exponential(2500.0), r.exponential(20.0) + 2.0),
            Context::Hostile => (r.exponential(4000.0), r.exponential(10.0) + 0.1),
        };
        let velocity = distance_km / hours_between;
        let country_change = distance_km > 800.0 || (distance_km > 100.0 && r.chance(0.3));
        set(Feature::GeoVelocity, log_unit(velocity, 1000.0));
        set(Feature::GeoDistance, log_unit(distance_km, 10_000.0));
        set(Feature::CountryChange, flag(country_change));
        set(Feature::ImpossibleTravel, flag(velocity > 900.0));
        set(
            Feature::TimezoneMismatch,
            flag(r.chance(if hostile { 0.5 } else { 0.05 })),
        );
        set(
            Feature::LanguageMismatch,
            flag(r.chance(if hostile { 0.4 } else { 0.03 })),
        );
        set(Feature::NewCity, flag(distance_km > 30.0 && r.chance(0.7)));
        set(Feature::IspChange, flag(away || r.chance(0.1)));

        let tor = hostile && r.chance(0.15);
        let vpn = r.chance(if hostile { 0.4 } else { 0.08 });
        let hosting = tor || r.chance(if bot { 0.6 } else { 0.03 });
        let asn_rep = if hosting {
            r.uniform(0.0, 0.5)
        } else {
            r.uniform(0.5, 1.0)
        };
        set(Feature::TorExit, flag(tor));
        set(Feature::Vpn, flag(vpn));
        set(Feature::HostingAsn, flag(hosting));
        set(Feature::AsnReputation, asn_rep);
        let ip_bad = (if hostile { 0.5 } else { 0.1 }) + 0.3 * r.unit() + 0.2 * flag(tor);
        set(Feature::IpReputation, ip_bad.min(1.0));
        let ip_accounts = if bot {
            r.exponential(60.0)
        } else {
            r.exponential(1.0)
        };
        set(Feature::IpAccounts24h, log_unit(ip_accounts, 100.0));
        let account_ips = if hostile {
            r.exponential(6.0)
        } else {
            r.exponential(1.5)
        };
        set(Feature::AccountIps24h, log_unit(account_ips, 20.0));

        let failed_1h = if hostile {
            r.exponential(6.0)
        } else {
            r.exponential(0.2)
        };
        let failed_24h = failed_1h
            + if hostile {
                r.exponential(20.0)
            } else {
                r.exponential(0.5)
            };
        set(Feature::Failed1h, log_unit(failed_1h.floor(), 20.0));
        set(Feature::Failed24h, log_unit(failed_24h.floor(), 100.0));
        let mfa_enrolled = r.chance(0.6);
        let mfa_used = mfa_enrolled && r.chance(if hostile { 0.3 } else { 0.9 });
        let mfa_failed = if hostile && mfa_enrolled {
            r.exponential(3.0)
        } else {
            r.exponential(0.05)
        };
        set(Feature::FailedMfa1h, log_unit(mfa_failed.floor(), 10.0));
        let per_min = if bot {
            r.exponential(30.0)
        } else {
            r.exponential(0.5)
        };
        set(Feature::AttemptsPerMin, log_unit(per_min, 60.0));
        let captcha = if bot {
            r.uniform(0.0, 0.5)
        } else {
            r.uniform(0.4, 1.0)
        };
        set(Feature::CaptchaScore, captcha);
        let typing = r.normal() + if hostile { 2.0 } else { 0.0 };
        set(Feature::TypingCadence, typing);
        let mouse = if bot {
            r.uniform(0.0, 0.3)
        } else {
            r.uniform(0.3, 1.0)
        };
        set(Feature::MouseEntropy, mouse);

        set(Feature::PasswordAge, log_unit(r.exponential(250.0), 1000.0));
        set(
            Feature::PasswordResetRecent,
            flag(r.chance(if hostile { 0.15 } else { 0.02 })),
        );
        set(
            Feature::PasswordBreached,
            flag(r.chance(if hostile { 0.5 } else { 0.05 })),
        );
        set(Feature::MfaEnrolled, flag(mfa_enrolled));
        set(Feature::MfaUsed, flag(mfa_used));
        let strength = if !mfa_used {
            0.0
        } else if r.chance(0.4) {
            0.5
        } else {
            1.0
        };
        set(Feature::MfaStrength, strength);
        set(Feature::SsoLogin, flag(!hostile && r.chance(0.2)));
        set(
            Feature::ApiClient,
            flag(r.chance(if bot { 0.3 } else { 0.05 })),
        );

        // Account takeovers hit old accounts; bots also register fresh ones.
        let account_days = if bot && r.chance(0.5) {
            r.exponential(10.0)
        } else {
            r.exponential(700.0)
        };
        set(Feature::AccountAge, log_unit(account_days, 1000.0));
        set(Feature::Logins7d, log_unit(r.exponential(8.0), 50.0));
        let since_last = if hostile {
            r.exponential(400.0)
        } else {
            r.exponential(40.0)
        };
        set(Feature::SinceLastLogin, log_unit(since_last, 1000.0));
        set(Feature::ActiveSessions, log_unit(r.exponential(1.5), 10.0));
        set(Feature::Privileged, flag(r.chance(0.05)));
        set(
            Feature::EmailChangeRecent,
            flag(r.chance(if hostile { 0.2 } else { 0.02 })),
        );
        set(
            Feature::PhoneChangeRecent,
            flag(r.chance(if hostile { 0.15 } else { 0.02 })),
        );
        set(
            Feature::PayoutChangeRecent,
            flag(r.chance(if hostile { 0.2 } else { 0.02 })),
        );
        let txn = if hostile {
            r.exponential(3000.0)
        } else {
            r.exponential(300.0)
        };
        set(Feature::TxnVolume, log_unit(txn, 10_000.0));
        let disposable = r.chance(if bot { 0.4 } else { 0.02 });
        let domain_risk = if disposable {
            r.uniform(0.6, 1.0)
        } else {
            r.uniform(0.0, 0.4)
        };
        set(Feature::EmailDomainRisk, domain_risk);
        set(Feature::DisposableEmail, flag(disposable));
        set(
            Feature::PrevSessionLength,
            log_unit(r.exponential(30.0), 600.0),
        );
        set(Feature::RememberMe, flag(!bot && r.chance(0.5)));
        set(
            Feature::CookiesDisabled,
            flag(r.chance(if bot { 0.5 } else { 0.02 })),
        );
        set(
            Feature::ExternalReferrer,
            flag(r.chance(if hostile { 0.3 } else { 0.1 })),
        );
        set(
            Feature::SupportTicketRecent,
            flag(r.chance(if hostile { 0.08 } else { 0.02 })),
        );
        set(
            Feature::PriorFraud,
            flag(r.chance(if hostile { 0.1 } else { 0.01 })),
        );
        row
    }
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
