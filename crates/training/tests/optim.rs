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

// ---- Parameter roles: AdamW's no-decay set, layer-wise rates, train_bn on models without BatchNorm ----

mod roles {
    use std::collections::BTreeSet;

    use backbones::convnext::{ConvNext, ConvNextConfig};
    use backbones::vit::{Vit, VitConfig};
    use backbones::{unfreeze_all, Backbone, ParamRole, ParamStore};
    use candle_core::{DType, Device, Tensor, Var};
    use training::{
        layer_decay_groups, set_trainable, split_no_decay, Adam, AdamConfig, GroupDecay, Optimizer, ParamGroup,
        Unfreeze,
    };

    fn tiny_vit(depth: usize) -> Vit {
        let mut cfg = VitConfig::dinov2("tiny_vit", 8, depth, 2); // layer scale on
        cfg.img_size = 28;
        cfg.num_classes = 5;
        cfg.dynamic_img_size = false;
        Vit::new(&cfg, &ParamStore::empty(DType::F32, &Device::Cpu)).unwrap()
    }

    fn tiny_convnext() -> ConvNext {
        let mut cfg = ConvNextConfig::new("tiny_convnext", [1, 1, 2, 1], [4, 8, 8, 8], false);
        cfg.num_classes = 0;
        ConvNext::new(&cfg, &ParamStore::empty(DType::F32, &Device::Cpu)).unwrap()
    }

    fn value(v: &Var) -> Vec<f32> {
        v.as_tensor().flatten_all().unwrap().to_vec1().unwrap()
    }

    /// One AdamW step (lr 0.1, wd 0.1) with a zero gradient on every trainable parameter set to 0.5: decayed
    /// parameters become 0.5·(1 − lr·wd), the others stay 0.5.
    fn step_and_check(model: &dyn Backbone, decayed: &[&str], kept: &[&str]) {
        unfreeze_all(model).unwrap();
        let store = model.store();
        for p in store.params() {
            p.set(&(p.tensor().ones_like().unwrap() * 0.5).unwrap()).unwrap();
        }
        let vars = store.trainable_vars();
        let groups = split_no_decay(vec![ParamGroup::new("all", vars.clone(), 0.1)], &store.roles());
        assert_eq!(
            groups
                .iter()
                .map(|g| (g.name.as_str(), g.weight_decay))
                .collect::<Vec<_>>(),
            [("all", GroupDecay::All), ("all.no_decay", GroupDecay::Value(0.0))]
        );
        let again = split_no_decay(groups.clone(), &store.roles());
        assert_eq!(
            again.iter().map(|g| (&g.name, g.params.len())).collect::<Vec<_>>(),
            groups.iter().map(|g| (&g.name, g.params.len())).collect::<Vec<_>>(),
            "splitting twice changes nothing"
        );
        let cfg = AdamConfig {
            weight_decay: 0.1,
            ..AdamConfig::adamw()
        };
        let mut opt = Adam::new(groups, cfg).unwrap();
        let zero = vars
            .iter()
            .map(|(_, v)| v.as_tensor().sum_all().unwrap())
            .reduce(|a, b| (a + b).unwrap())
            .unwrap();
        // Multiplied by a zero tensor (not by the scalar 0, whose branch candle's backward prunes).
        let grads = zero.mul(&zero.zeros_like().unwrap()).unwrap().backward().unwrap();
        opt.step(&grads).unwrap();
        let get = |n: &str| {
            vars.iter()
                .find(|(k, _)| k == n)
                .unwrap_or_else(|| panic!("{n}"))
                .1
                .clone()
        };
        for n in decayed {
            assert!(
                value(&get(n)).iter().all(|&x| (x - 0.5 * 0.99).abs() < 1e-7),
                "{n} decays"
            );
        }
        for n in kept {
            assert!(value(&get(n)).iter().all(|&x| x == 0.5), "{n} is not decayed");
        }
        for (n, v) in &vars {
            let role = store.roles()[n];
            let want = if role == ParamRole::Weight { 0.5 * 0.99 } else { 0.5 };
            assert!(value(v).iter().all(|&x| (x - want).abs() < 1e-7), "{n} ({role:?})");
        }
    }

    #[test]
    fn adamw_skips_decay_by_role_on_a_vit() {
        step_and_check(
            &tiny_vit(2),
            &[
                "patch_embed.proj.weight",
                "blocks.0.attn.qkv.weight",
                "blocks.1.mlp.fc1.weight",
                "head.weight",
            ],
            &[
                "pos_embed",
                "cls_token",
                "blocks.0.ls1.gamma",
                "blocks.1.ls2.gamma",
                "blocks.0.norm1.weight",
                "norm.weight",
                "norm.bias",
                "blocks.0.attn.qkv.bias",
                "patch_embed.proj.bias",
            ],
        );
    }

    #[test]
    fn adamw_skips_decay_by_role_on_a_convnext() {
        step_and_check(
            &tiny_convnext(),
            &[
                "stem.0.weight",
                "stages.0.blocks.0.conv_dw.weight",
                "stages.1.downsample.1.weight",
            ],
            &[
                "stages.0.blocks.0.gamma",
                "stages.0.blocks.0.norm.weight",
                "stages.0.blocks.0.mlp.fc1.bias",
                "stem.1.bias",
                "head.norm.weight",
            ],
        );
    }

    #[test]
    fn a_group_decay_value_replaces_the_optimizers_and_is_checked() {
        let w = Var::from_tensor(&Tensor::ones((2, 2), DType::F32, &Device::Cpu).unwrap()).unwrap();
        let groups =
            vec![ParamGroup::new("g", vec![("w".into(), w.clone())], 0.1).with_weight_decay(GroupDecay::Value(0.5))];
        let mut opt = Adam::new(groups, AdamConfig::adamw()).unwrap();
        let sum = w.as_tensor().sum_all().unwrap();
        let grads = sum.mul(&sum.zeros_like().unwrap()).unwrap().backward().unwrap();
        opt.step(&grads).unwrap();
        assert!(value(&w).iter().all(|&x| (x - 0.95).abs() < 1e-7), "{:?}", value(&w));
        let bad = vec![ParamGroup::new("g", vec![("w".into(), w)], 0.1).with_weight_decay(GroupDecay::Value(-1.0))];
        assert!(Adam::new(bad, AdamConfig::adamw()).is_err());
    }

    #[test]
    fn layer_decay_rates_of_a_depth_3_vit_follow_the_formula() {
        let vit = tiny_vit(3);
        unfreeze_all(&vit).unwrap();
        let head = vec![(
            "out.weight".to_string(),
            Var::from_tensor(&Tensor::ones((2, 8), DType::F32, &Device::Cpu).unwrap()).unwrap(),
        )];
        let (base, d) = (0.01, 0.5);
        let groups = layer_decay_groups(&vit, head, base, d).unwrap();
        // L = 3: layer i trains at base · d^(L + 1 − i): embed 0, blocks.i → i + 1, the final norm and head 4.
        let expect = |id: i32| base * d.powi(4 - id);
        let by_name = |n: &str| {
            groups
                .iter()
                .find(|g| g.name == n)
                .unwrap_or_else(|| panic!("no group {n}"))
        };
        for id in 0..=4 {
            let g = by_name(&format!("backbone.layer_{id}.no_decay"));
            assert!(
                (g.lr - expect(id)).abs() < 1e-15,
                "layer {id}: {} vs {}",
                g.lr,
                expect(id)
            );
            assert_eq!(g.weight_decay, GroupDecay::Value(0.0));
        }
        let rate_of = |param: &str| {
            groups
                .iter()
                .find(|g| g.params.iter().any(|(n, _)| n == param))
                .unwrap_or_else(|| panic!("{param} in no group"))
        };
        for (param, id) in [
            ("patch_embed.proj.weight", 0),
            ("pos_embed", 0),
            ("cls_token", 0),
            ("blocks.0.attn.qkv.weight", 1),
            ("blocks.1.norm2.bias", 2),
            ("blocks.2.mlp.fc2.weight", 3),
            ("norm.weight", 4),
            ("head.weight", 4),
        ] {
            let g = rate_of(param);
            assert!((g.lr - expect(id)).abs() < 1e-15, "{param}: {}", g.lr);
        }
        assert_eq!(rate_of("blocks.2.mlp.fc2.weight").weight_decay, GroupDecay::All);
        assert_eq!(rate_of("pos_embed").weight_decay, GroupDecay::Value(0.0));
        let h = by_name("head");
        assert_eq!((h.lr, h.params.len()), (base, 1));
        let total: usize = groups.iter().map(|g| g.params.len()).sum();
        assert_eq!(total, vit.store().trainable_vars().len() + 1, "every parameter once");
        assert_eq!(
            "blocks.0.ls1.gamma",
            by_name("backbone.layer_1.no_decay")
                .params
                .iter()
                .find(|(n, _)| n.ends_with("gamma"))
                .unwrap()
                .0
        );
        assert!(layer_decay_groups(&vit, Vec::new(), base, 1.5).is_err());
        assert!(layer_decay_groups(&vit, Vec::new(), base, 0.0).is_err());
    }

    #[test]
    fn layer_decay_is_an_error_for_architectures_without_layer_ids() {
        let store = ParamStore::empty(DType::F32, &Device::Cpu);
        let vgg = backbones::zoo::build("resnet18", &store).unwrap();
        let e = layer_decay_groups(vgg.as_ref(), Vec::new(), 0.1, 0.75).unwrap_err();
        assert!(e.to_string().contains("layer decay is not defined for resnet18"), "{e}");
    }

    fn trainable(model: &dyn Backbone) -> BTreeSet<String> {
        model.store().trainable_vars().into_iter().map(|(n, _)| n).collect()
    }

    /// With `train_bn`, exactly the last stage plus every norm parameter of the frozen stages trains.
    fn check_train_bn(model: &dyn Backbone) {
        set_trainable(model, Unfreeze::Last(1), false).unwrap();
        let last = trainable(model);
        assert!(!last.is_empty());
        set_trainable(model, Unfreeze::Last(1), true).unwrap();
        let with_bn = trainable(model);
        let roles = model.store().roles();
        let stages: Vec<String> = model.stages().into_iter().flat_map(|s| s.prefixes).collect();
        let norms: BTreeSet<String> = roles
            .iter()
            .filter(|(n, r)| **r == ParamRole::Norm && stages.iter().any(|p| backbones::params::name_has_prefix(n, p)))
            .map(|(n, _)| n.clone())
            .collect();
        assert!(norms.len() > 2, "{}", model.name());
        let want: BTreeSet<String> = last.union(&norms).cloned().collect();
        assert_eq!(with_bn, want, "{}", model.name());
        assert!(with_bn.len() > last.len());
        set_trainable(model, Unfreeze::None, false).unwrap();
        assert!(trainable(model).is_empty());
    }

    #[test]
    fn train_bn_trains_the_norm_layers_of_frozen_stages() {
        check_train_bn(&tiny_vit(2));
        check_train_bn(&tiny_convnext());
    }
}
