//! The seeded sampler of authentication events ([`EventSampler`]): draws each event's
//! context (usual, traveller, hostile), then every feature given it, normalised by the
//! fixed transforms the parent module describes.

use super::{FEATURES, Feature, Row};
use crate::models::rng::Rng;

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
