//! Optimizer update rules against values computed by hand (PyTorch's formulas) for a few steps.

use candle_core::{Device, Tensor, Var};
use training::{Adam, AdamConfig, Optimizer, ParamGroup, Sgd, SgdConfig};

/// Run `steps` steps on loss = ½·Σp² (gradient = p) for each named parameter, returning its value after each step.
fn run(opt: &mut dyn Optimizer, vars: &[Var], steps: usize) -> Vec<Vec<f32>> {
    let mut out = Vec::new();
    for _ in 0..steps {
        let loss = vars
            .iter()
            .map(|v| v.as_tensor().sqr().unwrap().sum_all().unwrap())
            .reduce(|a, b| (a + b).unwrap());
        let grads = (loss.unwrap() * 0.5).unwrap().backward().unwrap();
        opt.step(&grads).unwrap();
        out.push(
            vars.iter()
                .map(|v| v.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap()[0])
                .collect(),
        );
    }
    out
}

fn var(v: f32, shape: &[usize]) -> Var {
    let n: usize = shape.iter().product();
    Var::from_tensor(&Tensor::from_vec(vec![v; n], shape, &Device::Cpu).unwrap()).unwrap()
}

fn close(got: &[f32], want: &[f64]) {
    for (g, w) in got.iter().zip(want) {
        assert!((*g as f64 - w).abs() < 1e-5, "got {got:?}, want {want:?}");
    }
}

#[test]
#[allow(clippy::approx_constant)] // 0.6931 is a hand-computed step, not ln 2
fn sgd_plain_momentum_weight_decay_and_nesterov() {
    let cases: [(SgdConfig, [f64; 3]); 3] = [
        (
            SgdConfig {
                momentum: 0.0,
                nesterov: false,
                weight_decay: 0.0,
            },
            [0.9, 0.81, 0.729],
        ),
        (
            SgdConfig {
                momentum: 0.9,
                nesterov: false,
                weight_decay: 0.1,
            },
            [0.89, 0.6931, 0.439649],
        ),
        (
            SgdConfig {
                momentum: 0.9,
                nesterov: true,
                weight_decay: 0.0,
            },
            [0.81, 0.5751, 0.327321],
        ),
    ];
    for (cfg, want) in cases {
        let p = var(1.0, &[2, 2]);
        let mut opt = Sgd::new(vec![ParamGroup::new("g", vec![("w".into(), p.clone())], 0.1)], cfg).unwrap();
        let got: Vec<f32> = run(&mut opt, &[p], 3).into_iter().map(|v| v[0]).collect();
        close(&got, &want);
    }
    assert!(Sgd::new(
        vec![],
        SgdConfig {
            momentum: 0.0,
            nesterov: true,
            weight_decay: 0.0
        }
    )
    .is_err());
}

#[test]
fn adam_and_adamw_match_pytorch() {
    let p = var(1.0, &[3]);
    let mut opt = Adam::new(
        vec![ParamGroup::new("g", vec![("w".into(), p.clone())], 0.1)],
        AdamConfig::adam(),
    )
    .unwrap();
    let got: Vec<f32> = run(&mut opt, &[p], 3).into_iter().map(|v| v[0]).collect();
    close(&got, &[0.900000001, 0.8004122297, 0.7015862745]);

    // AdamW: decoupled decay on a 2-d weight, none on the bias or a norm scale.
    let (w, b, bn) = (var(1.0, &[2, 2]), var(1.0, &[2, 2]), var(1.0, &[2, 2]));
    let params = vec![
        ("fc.weight".into(), w.clone()),
        ("fc.bias".into(), b.clone()),
        ("bn1.weight".into(), bn.clone()),
    ];
    let cfg = AdamConfig {
        weight_decay: 0.1,
        ..AdamConfig::adamw()
    };
    let mut opt = Adam::new(vec![ParamGroup::new("g", params, 0.1)], cfg).unwrap();
    let got = run(&mut opt, &[w, b, bn], 3);
    close(
        &got.iter().map(|v| v[0]).collect::<Vec<_>>(),
        &[0.890000001, 0.7815718570, 0.6751012232],
    );
    close(
        &got.iter().map(|v| v[1]).collect::<Vec<_>>(),
        &[0.900000001, 0.8004122297, 0.7015862745],
    );
    close(
        &got.iter().map(|v| v[2]).collect::<Vec<_>>(),
        &[0.900000001, 0.8004122297, 0.7015862745],
    );
}

#[test]
fn groups_have_their_own_rates_and_the_scale_applies_to_all() {
    let (a, b) = (var(1.0, &[1]), var(1.0, &[1]));
    let groups = vec![
        ParamGroup::new("backbone", vec![("a".into(), a.clone())], 0.01),
        ParamGroup::new("head", vec![("b".into(), b.clone())], 0.1),
    ];
    let cfg = SgdConfig {
        momentum: 0.0,
        ..Default::default()
    };
    let mut opt = Sgd::new(groups, cfg).unwrap();
    opt.set_lr_scale(0.5);
    assert!((opt.lr() - 0.005).abs() < 1e-12);
    let got = run(&mut opt, &[a, b], 1);
    close(&got[0], &[1.0 - 0.005, 1.0 - 0.05]);
}

#[test]
fn state_roundtrip_resumes_exactly() {
    for adam in [false, true] {
        let make = |p: &Var| -> Box<dyn Optimizer> {
            let g = vec![ParamGroup::new("g", vec![("w".into(), p.clone())], 0.1)];
            if adam {
                Box::new(Adam::new(g, AdamConfig::adamw()).unwrap())
            } else {
                Box::new(
                    Sgd::new(
                        g,
                        SgdConfig {
                            momentum: 0.9,
                            nesterov: true,
                            weight_decay: 0.01,
                        },
                    )
                    .unwrap(),
                )
            }
        };
        // Uninterrupted: 4 steps.
        let p = var(1.0, &[2, 3]);
        let mut opt = make(&p);
        let full = run(opt.as_mut(), std::slice::from_ref(&p), 4);
        // Interrupted after 2: a fresh optimizer restored from the state.
        let q = var(1.0, &[2, 3]);
        let mut first = make(&q);
        run(first.as_mut(), std::slice::from_ref(&q), 2);
        let state = first.state();
        let mut second = make(&q);
        second.load_state(&state).unwrap();
        let rest = run(second.as_mut(), std::slice::from_ref(&q), 2);
        assert_eq!(rest, full[2..].to_vec(), "adam = {adam}");
        // Without the state the result differs (the state matters).
        let r = var(1.0, &[2, 3]);
        let mut a = make(&r);
        run(a.as_mut(), std::slice::from_ref(&r), 2);
        let mut b = make(&r);
        assert_ne!(run(b.as_mut(), std::slice::from_ref(&r), 2), full[2..].to_vec());
    }
}
