//! VGG-16's optional ImageNet classifier (timm's `ConvMlp` pre-logits + `head.fc`) and its adaptive pooling.

use std::collections::HashMap;

use backbones::vgg::adaptive_avg_pool2d;
use backbones::{zoo, ParamStore};
use candle_core::{DType, Device, Tensor};
use rand::Rng;
use rand_chacha::rand_core::SeedableRng;

#[test]
fn adaptive_pool_uses_pytorch_bins() {
    // 2 → 7 (upsampling, as the head does for small inputs): bins [0,1) [0,1) [0,1) [0,2) [1,2) [1,2) [1,2).
    let x = Tensor::new(&[[[[1f32, 2.], [3., 4.]]]], &Device::Cpu).unwrap();
    let y = adaptive_avg_pool2d(&x, 7, 7).unwrap();
    assert_eq!(y.dims(), [1, 1, 7, 7]);
    let y = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let idx = [0., 0., 0., 0.5, 1., 1., 1.];
    for (i, fi) in idx.iter().enumerate() {
        for (j, fj) in idx.iter().enumerate() {
            let want = 1. + 2. * fi + fj; // x[r][c] = 1 + 2r + c: a bin mean is 1 + 2·mean(r) + mean(c)
            assert!(
                (y[i * 7 + j] - want).abs() < 1e-6,
                "({i},{j}): {} != {want}",
                y[i * 7 + j]
            );
        }
    }
    // 5 → 3 (overlapping bins [0,2) [1,4) [3,5)) on one axis, identity on the other.
    let x = Tensor::new(&[[[[0f32, 1., 2., 3., 4.]]]], &Device::Cpu).unwrap();
    let y = adaptive_avg_pool2d(&x, 1, 3)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(y, [0.5, 2.0, 3.5]);
}

fn random(rng: &mut rand_chacha::ChaCha8Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(-scale..scale)).collect()
}

#[test]
fn classifier_matches_dense_formulation() {
    let Some(path) = tests::assets::require("parity/vgg16_features.weights.safetensors") else {
        return;
    };
    let dev = Device::Cpu;
    let mut tensors = candle_core::safetensors::load(&path, &dev).unwrap();
    // Classifier weights: only the first K hidden units are non-zero, so a dense reference stays cheap.
    const K: usize = 8;
    const H: usize = 4096;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let fan1 = 512 * 7 * 7;
    let mut w1 = vec![0f32; H * fan1];
    w1[..K * fan1].copy_from_slice(&random(&mut rng, K * fan1, 0.02));
    let mut b1 = vec![0f32; H];
    b1[..K].copy_from_slice(&random(&mut rng, K, 0.5));
    let mut w2 = vec![0f32; H * H];
    for i in 0..K {
        w2[i * H..i * H + K].copy_from_slice(&random(&mut rng, K, 0.5));
    }
    let mut b2 = vec![0f32; H];
    b2[..K].copy_from_slice(&random(&mut rng, K, 0.5));
    let wh = random(&mut rng, 1000 * H, 0.5);
    let bh = random(&mut rng, 1000, 0.5);
    let mut put = |name: &str, v: Vec<f32>, shape: &[usize]| {
        tensors.insert(name.to_string(), Tensor::from_vec(v, shape, &dev).unwrap());
    };
    put("pre_logits.fc1.weight", w1.clone(), &[H, 512, 7, 7]);
    put("pre_logits.fc1.bias", b1.clone(), &[H]);
    put("pre_logits.fc2.weight", w2, &[H, H, 1, 1]);
    put("pre_logits.fc2.bias", b2.clone(), &[H]);
    put("head.fc.weight", wh.clone(), &[1000, H]);
    put("head.fc.bias", bh.clone(), &[1000]);
    let store = ParamStore::from_tensors(tensors.into_iter().collect::<HashMap<_, _>>(), DType::F32, &dev);
    let model = zoo::build("vgg16", &store).unwrap();
    assert!(model.has_classifier());
    assert!(store.unused().is_empty());

    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(8);
    let x = Tensor::from_vec(random(&mut rng, 2 * 3 * 64 * 64, 2.0), (2, 3, 64, 64), &dev).unwrap();
    let logits = model.forward_logits(&x).unwrap().expect("classifier");
    assert_eq!(logits.dims(), [2, 1000]);
    assert!(model
        .classify(&model.forward_pooled(&x, false).unwrap())
        .unwrap()
        .is_none());

    // Dense reference: the 2×2 map pooled up to 7×7, flattened as (C, h, w), through the first K units.
    let map = model.forward_features(&x, false).unwrap();
    assert_eq!(map.dims(), [2, 512, 2, 2]);
    let flat = adaptive_avg_pool2d(&map, 7, 7).unwrap().reshape((2, fan1)).unwrap();
    let w1k = Tensor::from_slice(&w1[..K * fan1], (K, fan1), &dev).unwrap();
    let h1 = flat
        .matmul(&w1k.t().unwrap())
        .unwrap()
        .broadcast_add(&Tensor::new(&b1[..K], &dev).unwrap());
    let h1 = h1.unwrap().relu().unwrap();
    let w2k = store.state_dict()["pre_logits.fc2.weight"]
        .narrow(0, 0, K)
        .unwrap()
        .narrow(1, 0, K)
        .unwrap()
        .reshape((K, K))
        .unwrap();
    let h2 = h1
        .matmul(&w2k.t().unwrap())
        .unwrap()
        .broadcast_add(&Tensor::new(&b2[..K], &dev).unwrap());
    let h2 = h2.unwrap().relu().unwrap();
    let whk = Tensor::from_slice(&wh, (1000, H), &dev)
        .unwrap()
        .narrow(1, 0, K)
        .unwrap();
    let want = h2
        .matmul(&whk.t().unwrap())
        .unwrap()
        .broadcast_add(&Tensor::from_slice(&bh, 1000, &dev).unwrap())
        .unwrap();
    let diff = (logits - &want)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let scale = want
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
        .max(1.0);
    assert!(diff <= 1e-4 * scale, "max diff {diff} (scale {scale})");
    // The hidden units matter: logits are not just the head's bias.
    let h2_norm = h2.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(
        h2_norm > 0.0,
        "the reference hidden layer is all zero; the test checks nothing"
    );
}

#[test]
fn empty_store_builds_the_classifier() {
    let store = ParamStore::empty(DType::F32, &Device::Cpu);
    let model = zoo::build("vgg16", &store).unwrap();
    assert!(model.has_classifier());
    assert_eq!(store.state_dict().len(), 32);
}
