//! Sample tenant models end to end: trained per tenant, they rank held-out events well
//! (AUC > 0.8), the worker's real runtime loads each artifact and scores exactly what the
//! training side computes, and different tenants score the same event differently.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use shardline_loadtest::models::{
    FEATURES, TenantProfile, TrainOptions, TrainedModel, train_tenant_model,
};
use shardline_model::MlpModel;

fn assert_same_scores(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        assert!(
            (g - w).abs() < 1e-5,
            "{what}: worker {g}, training side {w}"
        );
    }
}

/// Loads the artifact as the worker does and checks it against `predict`.
fn served_scores(model: &TrainedModel, input: &[f32], rows: usize) -> Vec<f32> {
    let served =
        MlpModel::from_safetensors(&model.artifact.config, &model.artifact.weights).unwrap();
    assert_eq!(served.input_dim(), FEATURES);
    assert_eq!(served.output_dim(), 1);
    let got = served.forward(input, rows).unwrap();
    assert_same_scores(&model.tenant, &got, &model.predict(input, rows).unwrap());
    got
}

#[test]
fn tenant_models_rank_well_load_in_the_worker_and_differ() {
    let fleet = TenantProfile::fleet(3, 42);
    let options = TrainOptions::default();
    let models: Vec<TrainedModel> = fleet
        .iter()
        .map(|t| train_tenant_model(t, &options).unwrap())
        .collect();
    // The same events, sent to every tenant's model.
    let rows = 32;
    let input = fleet[0].sample_input(rows, 100);
    let mut scores = Vec::new();
    for (tenant, model) in fleet.iter().zip(&models) {
        eprintln!(
            "{}: held-out AUC {:.3} (best possible {:.3}), {:.1} % attacks",
            tenant.name,
            model.auc,
            model.oracle_auc,
            100.0 * model.positive_rate
        );
        assert!(model.auc > 0.8, "{}: AUC {}", tenant.name, model.auc);
        assert_eq!(model.features, FEATURES);
        let got = served_scores(model, &input, rows);
        assert!(got.iter().all(|p| *p > 0.0 && *p < 1.0), "probabilities");
        scores.push(got);
    }
    for i in 0..scores.len() {
        for j in i + 1..scores.len() {
            let differ = scores[i]
                .iter()
                .zip(&scores[j])
                .filter(|(a, b)| (*a - *b).abs() > 0.01)
                .count();
            assert!(
                differ > rows / 2,
                "tenants {i} and {j} agree on {} of {rows}",
                rows - differ
            );
        }
    }
}

/// `size_mb` publishes a wide model holding the trained one: same scores, same AUC.
#[test]
fn a_sized_model_scores_like_the_trained_one() {
    let tenant = TenantProfile::new(1, 7);
    let options = TrainOptions {
        train_rows: 1000,
        test_rows: 1000,
        epochs: 4,
        size_mb: Some(2.0),
        ..TrainOptions::default()
    };
    let model = train_tenant_model(&tenant, &options).unwrap();
    let mb = model.artifact.resident_bytes() as f64 / 1e6;
    assert!((1.9..2.1).contains(&mb), "{mb} MB");
    assert_eq!(model.artifact.dims.len(), 4);
    let input = tenant.sample_input(16, 5);
    served_scores(&model, &input, 16);
}
