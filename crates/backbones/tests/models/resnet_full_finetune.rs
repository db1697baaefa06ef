//! A fully unfrozen ResNet-18 takes a training step on the CPU: backward runs through the stem's 3×3/2 max-pool.

use backbones::{freeze_all_but_last, zoo, ParamStore};
use candle_core::{DType, Device, Tensor, D};
use rand::Rng;
use rand_chacha::rand_core::SeedableRng;

#[test]
fn fully_unfrozen_resnet18_takes_a_training_step() {
    let Some(path) = tests::assets::require("parity/resnet18.weights.safetensors") else {
        return;
    };
    let store = ParamStore::from_safetensors(&path, DType::F32, &Device::Cpu).unwrap();
    let model = zoo::build("resnet18", &store).unwrap();
    let stages = model.stages().len();
    freeze_all_but_last(model.as_ref(), stages).unwrap();
    let vars = store.trainable_vars();
    assert!(vars.iter().any(|(n, _)| n == "conv1.weight"), "the stem is trainable");

    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let n = 4;
    let x: Vec<f32> = (0..n * 3 * 64 * 64).map(|_| rng.gen_range(-2.0..2.0)).collect();
    let x = Tensor::from_vec(x, (n, 3, 64, 64), &Device::Cpu).unwrap();
    let target = Tensor::new(&[0u32, 1, 2, 3], &Device::Cpu).unwrap();

    let loss_of = |train: bool| {
        let pooled = model.forward_pooled(&x, train).unwrap();
        let logits = pooled.narrow(1, 0, 4).unwrap();
        let logp = candle_nn::ops::log_softmax(&logits, D::Minus1).unwrap();
        logp.gather(&target.unsqueeze(1).unwrap(), 1)
            .unwrap()
            .mean_all()
            .unwrap()
            .neg()
            .unwrap()
    };
    let loss = loss_of(true);
    let grads = loss.backward().unwrap();
    let stem = vars.iter().find(|(n, _)| n == "conv1.weight").unwrap().1.clone();
    let g = grads
        .get(stem.as_tensor())
        .expect("gradient reaches the stem through the max-pool");
    let gnorm = g.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(gnorm.is_finite() && gnorm > 0.0, "stem gradient norm {gnorm}");
    let with_grad = vars.iter().filter(|(_, v)| grads.get(v.as_tensor()).is_some()).count();
    assert_eq!(with_grad, vars.len(), "every trainable tensor gets a gradient");

    // One SGD step lowers the loss on this batch (eval mode, so BatchNorm statistics do not move the target).
    let before = loss_of(false).to_scalar::<f32>().unwrap();
    let loss = loss_of(false);
    let grads = loss.backward().unwrap();
    // A small step along the normalised gradient: first-order decrease is guaranteed.
    let total: f32 = vars
        .iter()
        .filter_map(|(_, v)| grads.get(v.as_tensor()))
        .map(|g| g.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap())
        .sum::<f32>()
        .sqrt();
    let eta = 1e-2 / total as f64;
    for (_, v) in &vars {
        if let Some(g) = grads.get(v.as_tensor()) {
            v.set(&(v.as_tensor() - (g * eta).unwrap()).unwrap()).unwrap();
        }
    }
    let after = loss_of(false).to_scalar::<f32>().unwrap();
    assert!(after < before, "loss {before} -> {after}");
}
