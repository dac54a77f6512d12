//! How far a shadow's answer is from the served one: the largest absolute difference
//! between their output values, read from the two OIP v2 JSON answers.

use serde_json::Value;

/// Why two answers could not be compared value by value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    #[error("an answer is not OIP v2 JSON with numeric outputs")]
    Unreadable,
    #[error("the answers' outputs differ in name, shape or length")]
    Shape,
}

/// The largest `|served − shadow|` over every value of every output the two answers
/// both hold, matched by output name. Answers with binary tensor data are compared by
/// the caller only when both are JSON.
pub fn max_abs_diff(served: &[u8], shadow: &[u8]) -> Result<f64, Mismatch> {
    let served = outputs(served)?;
    let shadow = outputs(shadow)?;
    if served.len() != shadow.len() {
        return Err(Mismatch::Shape);
    }
    let mut worst: f64 = 0.0;
    for (name, values) in &served {
        let (_, other) = shadow
            .iter()
            .find(|(n, _)| n == name)
            .ok_or(Mismatch::Shape)?;
        if other.len() != values.len() {
            return Err(Mismatch::Shape);
        }
        for (a, b) in values.iter().zip(other) {
            worst = worst.max((a - b).abs());
        }
    }
    Ok(worst)
}

/// Each output's name and values (flattened).
fn outputs(answer: &[u8]) -> Result<Vec<(String, Vec<f64>)>, Mismatch> {
    let v: Value = serde_json::from_slice(answer).map_err(|_| Mismatch::Unreadable)?;
    let list = v["outputs"].as_array().ok_or(Mismatch::Unreadable)?;
    list.iter()
        .map(|o| {
            let name = o["name"].as_str().ok_or(Mismatch::Unreadable)?.to_owned();
            let mut values = Vec::new();
            flatten(&o["data"], &mut values)?;
            Ok((name, values))
        })
        .collect()
}

fn flatten(data: &Value, out: &mut Vec<f64>) -> Result<(), Mismatch> {
    match data {
        Value::Array(items) => items.iter().try_for_each(|i| flatten(i, out)),
        Value::Number(n) => {
            out.push(n.as_f64().ok_or(Mismatch::Unreadable)?);
            Ok(())
        }
        Value::Bool(b) => {
            out.push(f64::from(u8::from(*b)));
            Ok(())
        }
        _ => Err(Mismatch::Unreadable),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn answer(outputs: &[(&str, &[f32])]) -> Vec<u8> {
        let outputs: Vec<Value> = outputs
            .iter()
            .map(|(n, d)| serde_json::json!({"name": n, "shape": [d.len(), 1], "datatype": "FP32", "data": d}))
            .collect();
        serde_json::to_vec(&serde_json::json!({"model_name": "risk", "outputs": outputs})).unwrap()
    }

    #[test]
    fn mismatched_or_unreadable_answers_are_named() {
        let a = answer(&[("risk", &[0.5, 0.25])]);
        assert_eq!(
            max_abs_diff(&a, &answer(&[("risk", &[0.5])])),
            Err(Mismatch::Shape)
        );
        assert_eq!(
            max_abs_diff(&a, &answer(&[("other", &[0.5, 0.2])])),
            Err(Mismatch::Shape)
        );
        assert_eq!(
            max_abs_diff(&a, b"{\"error\":\"x\"}"),
            Err(Mismatch::Unreadable)
        );
        assert_eq!(max_abs_diff(b"not json", &a), Err(Mismatch::Unreadable));
    }

    proptest! {
        /// The difference is the largest elementwise gap, whatever the output order.
        #[test]
        fn the_largest_gap_is_found(
            values in prop::collection::vec(-1.0f32..1.0, 1..20),
            offset in -0.5f32..0.5,
            at in any::<prop::sample::Index>(),
        ) {
            let i = at.index(values.len());
            let mut shifted = values.clone();
            shifted[i] += offset;
            let extra: &[f32] = &[1.0];
            let served = answer(&[("risk", &values), ("b", extra)]);
            let shadow = answer(&[("b", extra), ("risk", &shifted)]);
            let d = max_abs_diff(&served, &shadow).unwrap();
            let want = f64::from((shifted[i] - values[i]).abs());
            prop_assert!((d - want).abs() < 1e-6, "{d} vs {want}");
            prop_assert_eq!(max_abs_diff(&served, &served).unwrap(), 0.0);
        }
    }
}
