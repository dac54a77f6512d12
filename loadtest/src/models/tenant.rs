//! Tenants and their ground truth: each tenant weighs the risk factors of an event its own
//! way, and an event's true risk is the logistic of that combination.
//!
//! A tenant is one of a few kinds ([`TenantKind`]): a bank cares most about impossible
//! travel and new payout details, a game about fresh devices, emulators and bursts of
//! failed logins, a SaaS vendor about Tor, breached passwords and privileged accounts at odd
//! hours, a marketplace about throw-away e-mail and changed contact details. Each kind has
//! linear terms and a few interactions (a new device *and* new payout details); each tenant
//! perturbs its kind's weights and adds small weights of its own, from its seed, so no two
//! tenants share a rule.
//!
//! The raw combination is standardised on a fixed calibration sample and then scaled, so
//! that every tenant's rule is equally learnable: logit = `BASE_LOGIT + SPREAD · z`
//! (`loadtest models` prints the best possible AUC, scoring by the true risk itself, as
//! `best`).

use super::features::{EventSampler, FEATURES, Feature, Row};
use super::rng::Rng;

/// Scale of the standardised logit: how separable positives are.
const SPREAD: f64 = 3.0;
/// Logit of an average event: sets the share of positive labels (about 20 %).
const BASE_LOGIT: f64 = -2.2;
/// Events used to standardise a rule.
const CALIBRATION_ROWS: usize = 4000;

/// The business a tenant is in, which decides what it finds risky.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantKind {
    Bank,
    Game,
    Saas,
    Marketplace,
}

impl TenantKind {
    pub const ALL: [TenantKind; 4] = [Self::Bank, Self::Game, Self::Saas, Self::Marketplace];

    pub fn name(self) -> &'static str {
        match self {
            Self::Bank => "bank",
            Self::Game => "game",
            Self::Saas => "saas",
            Self::Marketplace => "shop",
        }
    }

    /// Share of hostile events in this kind's traffic.
    fn hostile_rate(self) -> f64 {
        match self {
            Self::Bank => 0.08,
            Self::Game => 0.2,
            Self::Saas => 0.1,
            Self::Marketplace => 0.15,
        }
    }

    /// Linear terms and interactions before the tenant's own perturbation.
    fn base_rule(self) -> (Vec<Term>, Vec<Interaction>) {
        use Feature::*;
        match self {
            Self::Bank => (
                vec![
                    (GeoVelocity, 2.0),
                    (ImpossibleTravel, 1.5),
                    (CountryChange, 1.0),
                    (NewDevice, 0.8),
                    (MfaUsed, -1.5),
                    (PayoutChangeRecent, 1.2),
                    (Failed24h, 0.8),
                    (TxnVolume, 0.6),
                ],
                vec![
                    (NewDevice, PayoutChangeRecent, 2.0),
                    (CountryChange, MfaUsed, -1.0),
                ],
            ),
            Self::Game => (
                vec![
                    (NewDevice, 2.0),
                    (Emulator, 1.5),
                    (HeadlessBrowser, 1.2),
                    (Failed1h, 1.5),
                    (AttemptsPerMin, 1.0),
                    (AccountAge, -0.8),
                    (Vpn, 0.5),
                ],
                vec![(NewDevice, Failed1h, 2.0), (Emulator, IpAccounts24h, 1.5)],
            ),
            Self::Saas => (
                vec![
                    (TorExit, 2.0),
                    (HostingAsn, 1.0),
                    (AsnReputation, -1.5),
                    (PasswordBreached, 1.5),
                    (PasswordAge, 0.7),
                    (MfaUsed, -1.0),
                    (TypingCadence, 0.5),
                ],
                vec![(Privileged, HourUnusual, 3.0), (Privileged, Vpn, 1.5)],
            ),
            Self::Marketplace => (
                vec![
                    (EmailChangeRecent, 1.5),
                    (DisposableEmail, 1.5),
                    (EmailDomainRisk, 1.0),
                    (PayoutChangeRecent, 1.0),
                    (CaptchaScore, -1.5),
                    (IpAccounts24h, 1.0),
                ],
                vec![
                    (EmailChangeRecent, NewDevice, 2.0),
                    (PhoneChangeRecent, SinceLastLogin, 1.5),
                ],
            ),
        }
    }
}

/// `(feature, weight)`: `weight · x[feature]`.
type Term = (Feature, f64);
/// `(a, b, weight)`: `weight · x[a] · x[b]`.
type Interaction = (Feature, Feature, f64);

/// One tenant: its name, kind, traffic and ground-truth risk rule.
#[derive(Debug, Clone)]
pub struct TenantProfile {
    /// A valid tenant id (`bank-0`, `game-1`, ...).
    pub name: String,
    pub kind: TenantKind,
    /// Share of hostile events in the tenant's traffic.
    pub hostile_rate: f64,
    /// Seed of everything drawn for this tenant (its events, its rule's perturbation).
    pub seed: u64,
    /// Weight of each feature in the raw combination (before standardisation).
    weights: [f64; FEATURES],
    /// Added to the raw combination.
    interactions: Vec<Interaction>,
    /// Mean and standard deviation of the raw combination on the calibration sample.
    center: f64,
    scale: f64,
}

impl TenantProfile {
    /// Tenant number `index` of a fleet generated from `seed`: kinds take turns, and the
    /// rule is perturbed from `(seed, index)`.
    pub fn new(index: usize, seed: u64) -> Self {
        let kind = TenantKind::ALL[index % TenantKind::ALL.len()];
        let tenant_seed = Rng::stream(seed, index as u64).next_u64();
        let mut rng = Rng::stream(tenant_seed, 0x7275_6c65); // "rule"
        let (linear, pairs) = kind.base_rule();
        let mut weights = [0.0; FEATURES];
        for (f, w) in linear {
            weights[f as usize] = w * rng.uniform(0.7, 1.3);
        }
        // A few idiosyncrasies of this tenant's own.
        for _ in 0..4 {
            weights[rng.below(FEATURES)] += rng.uniform(-0.6, 0.6);
        }
        let interactions = pairs
            .into_iter()
            .map(|(a, b, w)| (a, b, w * rng.uniform(0.7, 1.3)))
            .collect();
        let mut profile = Self {
            name: format!("{}-{index}", kind.name()),
            kind,
            hostile_rate: kind.hostile_rate(),
            seed: tenant_seed,
            weights,
            interactions,
            center: 0.0,
            scale: 1.0,
        };
        let raw: Vec<f64> = {
            let mut events = profile.events(0x6361_6c69); // "cali"
            (0..CALIBRATION_ROWS)
                .map(|_| profile.raw(&events.next_row()))
                .collect()
        };
        let mean = raw.iter().sum::<f64>() / raw.len() as f64;
        let var = raw.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / raw.len() as f64;
        profile.center = mean;
        profile.scale = var.sqrt().max(1e-9);
        profile
    }

    /// `n` tenants from one seed: `bank-0`, `game-1`, `saas-2`, `shop-3`, `bank-4`, ...
    pub fn fleet(n: usize, seed: u64) -> Vec<Self> {
        (0..n).map(|i| Self::new(i, seed)).collect()
    }

    /// A sampler of this tenant's traffic; `stream` picks an independent sequence (the
    /// training set, the test set and a load generator each use their own).
    pub fn events(&self, stream: u64) -> EventSampler {
        EventSampler::new(Rng::stream(self.seed, stream).next_u64(), self.hostile_rate)
    }

    /// `rows` events of this tenant's traffic from `stream`, row-major: the `data` of an
    /// OIP v2 request for its model (`shape: [rows, 64]`).
    pub fn sample_input(&self, rows: usize, stream: u64) -> Vec<f32> {
        let mut events = self.events(stream);
        (0..rows).flat_map(|_| events.next_row()).collect()
    }

    fn raw(&self, row: &Row) -> f64 {
        let linear: f64 = self
            .weights
            .iter()
            .zip(row)
            .map(|(w, x)| w * f64::from(*x))
            .sum();
        let pairs: f64 = self
            .interactions
            .iter()
            .map(|(a, b, w)| w * f64::from(row[*a as usize]) * f64::from(row[*b as usize]))
            .sum();
        linear + pairs
    }

    /// The true log-odds that this event is an attack, by this tenant's rule.
    pub fn logit(&self, row: &Row) -> f64 {
        BASE_LOGIT + SPREAD * (self.raw(row) - self.center) / self.scale
    }

    /// The true probability that this event is an attack.
    pub fn risk(&self, row: &Row) -> f64 {
        1.0 / (1.0 + (-self.logit(row)).exp())
    }

    /// The features this tenant's rule leans on most, strongest first (for reports).
    pub fn top_factors(&self, n: usize) -> Vec<(Feature, f64)> {
        let mut all: Vec<(Feature, f64)> = Feature::ALL
            .iter()
            .map(|f| (*f, self.weights[*f as usize]))
            .collect();
        all.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()));
        all.truncate(n);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_are_valid_tenant_ids() {
        for p in TenantProfile::fleet(9, 1) {
            shardline_shared::ids::TenantId::new(p.name.clone()).expect("valid id");
        }
    }

    #[test]
    fn kinds_find_different_things_risky() {
        let fleet = TenantProfile::fleet(4, 5);
        let top = |i: usize| -> Vec<Feature> {
            fleet[i]
                .top_factors(3)
                .into_iter()
                .map(|(f, _)| f)
                .collect()
        };
        assert!(top(0).contains(&Feature::GeoVelocity), "bank: {:?}", top(0));
        assert!(top(1).contains(&Feature::NewDevice), "game: {:?}", top(1));
        assert!(top(2).contains(&Feature::TorExit), "saas: {:?}", top(2));
        let firsts: std::collections::BTreeSet<Feature> = (0..4).map(|i| top(i)[0]).collect();
        assert!(firsts.len() >= 3, "{firsts:?}");
    }

    proptest! {
        // Each case calibrates three tenants (4000 events each).
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// Same (index, seed), same rule; two tenants of one fleet disagree on the risk of
        /// most events, even when they are of the same kind.
        #[test]
        fn rules_are_deterministic_and_differ(seed in any::<u64>(), a in 0usize..8, gap in 1usize..8) {
            let p = TenantProfile::new(a, seed);
            let again = TenantProfile::new(a, seed);
            let q = TenantProfile::new(a + gap, seed);
            let mut events = p.events(9);
            let mut differ = 0;
            for _ in 0..50 {
                let row = events.next_row();
                prop_assert_eq!(p.logit(&row), again.logit(&row));
                prop_assert!(p.logit(&row).is_finite());
                if (p.risk(&row) - q.risk(&row)).abs() > 1e-3 {
                    differ += 1;
                }
            }
            prop_assert!(differ > 25, "{} of 50 events scored alike", 50 - differ);
        }
    }
}
