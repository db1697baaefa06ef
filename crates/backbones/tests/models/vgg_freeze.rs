//! Freezing by Keras block on VGG-16: which parameters train and where gradients flow.

use backbones::{freeze_all_but_last, params::name_has_prefix, zoo, Backbone, ParamStore};
use candle_core::{DType, Device, Tensor};
use rand::Rng;
use rand_chacha::rand_core::SeedableRng;

fn model() -> Option<Box<dyn Backbone>> {
    let path = tests::assets::require("parity/vgg16_features.weights.safetensors")?;
    let store = ParamStore::from_safetensors(&path, DType::F32, &Device::Cpu).unwrap();
    Some(zoo::build("vgg16", &store).unwrap())
}

#[test]
fn last_two_blocks_train_and_get_gradients() {
    let Some(m) = model() else { return };
    let store = m.store();
    freeze_all_but_last(m.as_ref(), 1).unwrap();
    let trainable: Vec<String> = store.trainable_vars().into_iter().map(|(n, _)| n).collect();
    let block5 = ["features.24", "features.26", "features.28"];
    let mut want: Vec<String> = block5
        .iter()
        .flat_map(|p| [format!("{p}.weight"), format!("{p}.bias")])
        .collect();
    want.sort();
    assert_eq!(trainable, want);

    // Two blocks: the graph crosses block4's max-pool.
    freeze_all_but_last(m.as_ref(), 2).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let v: Vec<f32> = (0..2 * 3 * 64 * 64).map(|_| rng.gen_range(-2.0..2.0)).collect();
    let x = Tensor::from_vec(v, (2, 3, 64, 64), &Device::Cpu).unwrap();
    let pooled = m.forward_pooled(&x, true).unwrap();
    assert_eq!(pooled.dims(), [2, 512]);
    let loss = pooled.sqr().unwrap().mean_all().unwrap();
    let grads = loss.backward().unwrap();
    let mut with_grad = 0;
    for p in store.params() {
        match p.var() {
            Some(v) => {
                assert!(
                    ["block4", "block5"].iter().any(|b| {
                        let stage = m.stages().into_iter().find(|s| s.name == *b).unwrap();
                        stage.prefixes.iter().any(|pre| name_has_prefix(p.name(), pre))
                    }),
                    "{} is trainable",
                    p.name()
                );
                let g = grads
                    .get(v.as_tensor())
                    .unwrap_or_else(|| panic!("{}: no gradient", p.name()));
                let norm = g.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
                assert!(norm.is_finite() && norm > 0.0, "{}: gradient norm {norm}", p.name());
                with_grad += 1;
            }
            None => assert!(
                grads.get(&p.tensor()).is_none(),
                "{}: frozen but has a gradient",
                p.name()
            ),
        }
    }
    assert_eq!(with_grad, 12, "six convolutions, weight and bias each");
}
