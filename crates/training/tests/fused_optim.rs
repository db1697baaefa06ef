//! The optimizers' fused in-place CPU passes (f32) against their tensor-op composition (the same rules on f64,
//! which the fused passes do not take), over several steps of random gradients, for every rule; and the state an
//! optimizer hands out staying as it was while training goes on.

use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use training::{Adam, AdamConfig, Optimizer, ParamGroup, Sgd, SgdConfig};

/// Shapes: a small 2-d weight, a bias, and one larger than a parallel chunk (32768 elements).
const SHAPES: &[&[usize]] = &[&[7, 5], &[7], &[300, 130]];

fn values(rng: &mut rand_chacha::ChaCha8Rng, n: usize) -> Vec<f64> {
    (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect()
}

/// Parameters in `dtype` from fixed values, named like a layer so the AdamW name rule sees weights and biases.
fn params(init: &[Vec<f64>], dtype: DType) -> Vec<(String, Var)> {
    init.iter()
        .zip(SHAPES)
        .enumerate()
        .map(|(i, (v, s))| {
            let t = Tensor::from_vec(v.clone(), *s, &Device::Cpu)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            let name = if s.len() == 1 {
                format!("l{i}.bias")
            } else {
                format!("l{i}.weight")
            };
            (name, Var::from_tensor(&t).unwrap())
        })
        .collect()
}

/// `steps` steps of loss = Σ c ⊙ p² (gradient 2·c ⊙ p, c fixed random), values after the last.
fn train(opt: &mut dyn Optimizer, vars: &[(String, Var)], coef: &[Vec<f64>], steps: usize) -> Vec<Vec<f64>> {
    let dtype = vars[0].1.dtype();
    let coef: Vec<Tensor> = coef
        .iter()
        .zip(SHAPES)
        .map(|(c, s)| {
            Tensor::from_vec(c.clone(), *s, &Device::Cpu)
                .unwrap()
                .to_dtype(dtype)
                .unwrap()
        })
        .collect();
    for _ in 0..steps {
        let loss = vars
            .iter()
            .zip(&coef)
            .map(|((_, v), c)| (v.as_tensor().sqr().unwrap() * c).unwrap().sum_all().unwrap())
            .reduce(|a, b| (a + b).unwrap())
            .unwrap();
        opt.step(&loss.backward().unwrap()).unwrap();
    }
    vars.iter()
        .map(|(_, v)| {
            v.as_tensor()
                .flatten_all()
                .unwrap()
                .to_dtype(DType::F64)
                .unwrap()
                .to_vec1()
                .unwrap()
        })
        .collect()
}

fn build(kind: &str, vars: Vec<(String, Var)>) -> Box<dyn Optimizer> {
    let group = vec![ParamGroup::new("g", vars, 0.05)];
    match kind {
        "sgd" => Box::new(
            Sgd::new(
                group,
                SgdConfig {
                    momentum: 0.0,
                    nesterov: false,
                    weight_decay: 0.0,
                },
            )
            .unwrap(),
        ),
        "sgd-momentum-wd" => Box::new(
            Sgd::new(
                group,
                SgdConfig {
                    momentum: 0.9,
                    nesterov: false,
                    weight_decay: 0.01,
                },
            )
            .unwrap(),
        ),
        "sgd-nesterov-wd" => Box::new(
            Sgd::new(
                group,
                SgdConfig {
                    momentum: 0.9,
                    nesterov: true,
                    weight_decay: 0.01,
                },
            )
            .unwrap(),
        ),
        "adam-l2" => Box::new(
            Adam::new(
                group,
                AdamConfig {
                    weight_decay: 0.01,
                    ..AdamConfig::adam()
                },
            )
            .unwrap(),
        ),
        "adamw" => Box::new(
            Adam::new(
                group,
                AdamConfig {
                    weight_decay: 0.05,
                    ..AdamConfig::adamw()
                },
            )
            .unwrap(),
        ),
        _ => unreachable!(),
    }
}

#[test]
fn fused_passes_match_the_tensor_op_rules() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let init: Vec<Vec<f64>> = SHAPES.iter().map(|s| values(&mut rng, s.iter().product())).collect();
    let coef: Vec<Vec<f64>> = SHAPES
        .iter()
        .map(|s| {
            values(&mut rng, s.iter().product())
                .into_iter()
                .map(|c| c.abs() + 0.1)
                .collect()
        })
        .collect();
    for kind in ["sgd", "sgd-momentum-wd", "sgd-nesterov-wd", "adam-l2", "adamw"] {
        let fused_vars = params(&init, DType::F32);
        let plain_vars = params(&init, DType::F64);
        let fused = train(build(kind, fused_vars.clone()).as_mut(), &fused_vars, &coef, 6);
        let plain = train(build(kind, plain_vars.clone()).as_mut(), &plain_vars, &coef, 6);
        for ((f, p), init) in fused.iter().zip(&plain).zip(&init) {
            let moved = p.iter().zip(init).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
            let diff = f.iter().zip(p).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
            println!(
                "{kind} {} values: max |fused − plain| = {diff:.2e}, moved {moved:.3}",
                f.len()
            );
            assert!(moved > 1e-2, "{kind}: the parameters moved");
            assert!(diff < 2e-5, "{kind}: fused and tensor-op rules differ by {diff}");
        }
    }
}

#[test]
fn state_handed_out_does_not_change_when_training_goes_on() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
    let init: Vec<Vec<f64>> = SHAPES.iter().map(|s| values(&mut rng, s.iter().product())).collect();
    for kind in ["sgd-momentum-wd", "adamw"] {
        let vars = params(&init, DType::F32);
        let mut opt = build(kind, vars.clone());
        train(opt.as_mut(), &vars, &init, 2);
        let snapshot = opt.state();
        let before: Vec<(String, Vec<f32>)> = snapshot
            .tensors
            .iter()
            .map(|(k, t)| (k.clone(), t.flatten_all().unwrap().to_vec1().unwrap()))
            .collect();
        train(opt.as_mut(), &vars, &init, 2);
        for (k, v) in before {
            let now: Vec<f32> = snapshot.tensors[&k].flatten_all().unwrap().to_vec1().unwrap();
            assert_eq!(now, v, "{kind}: state `{k}` changed after it was handed out");
        }
        let later = opt.state();
        assert!(
            later.tensors.iter().any(|(k, t)| {
                let a: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
                a != snapshot.tensors[k].flatten_all().unwrap().to_vec1::<f32>().unwrap()
            }),
            "{kind}: the optimizer's own state moved on"
        );
    }
}
