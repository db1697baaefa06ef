//! Segmentation heads: which encoder maps they read, output shapes at any input size, gradients, save/load, and the
//! resampling and normalisation blocks against hand-computed PyTorch values.

use backbones::FeatureInfo;
use candle_core::{DType, Device, Tensor};
use heads::nn::{resize_bilinear, upsample_nearest2x, GroupNorm};
use heads::{Decoder, SegHead, SegHeadConfig};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn resnet_info() -> Vec<FeatureInfo> {
    vec![
        FeatureInfo::new("act1", 2, 16),
        FeatureInfo::new("layer1", 4, 16),
        FeatureInfo::new("layer2", 8, 24),
        FeatureInfo::new("layer3", 16, 32),
        FeatureInfo::new("layer4", 32, 40),
    ]
}

fn names(k: usize) -> Vec<String> {
    (0..k).map(|i| format!("c{i}")).collect()
}

fn maps(info: &[FeatureInfo], idx: &[usize], n: usize, h: usize, w: usize, seed: u64) -> Vec<Tensor> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    idx.iter()
        .map(|&i| {
            let f = &info[i];
            let (fh, fw) = (h.div_ceil(f.reduction), w.div_ceil(f.reduction));
            let v: Vec<f32> = (0..n * f.channels * fh * fw)
                .map(|_| rng.gen_range(-1f32..1.0))
                .collect();
            Tensor::from_vec(v, (n, f.channels, fh, fw), &Device::Cpu).unwrap()
        })
        .collect()
}

#[test]
fn decoders_pick_the_maps_they_need() {
    let info = resnet_info();
    let fpn = SegHeadConfig::for_encoder(Decoder::Fpn, names(3), &info).unwrap();
    assert_eq!(fpn.out_indices, vec![1, 2, 3, 4]);
    assert!(!fpn.simple_pyramid);
    assert_eq!(fpn.stride(), 32);
    let unet = SegHeadConfig::for_encoder(Decoder::Unet, names(3), &info).unwrap();
    assert_eq!(unet.out_indices, vec![0, 1, 2, 3, 4]);
    // Several maps at one reduction: the deepest one is used (timm's mobile nets list one per reduction anyway).
    let mut dup = info.clone();
    dup.insert(3, FeatureInfo::new("layer2b", 8, 24));
    assert_eq!(
        SegHeadConfig::for_encoder(Decoder::Fpn, names(2), &dup)
            .unwrap()
            .out_indices,
        vec![1, 3, 4, 5]
    );
    // A ViT: twelve blocks at 1/16 → four evenly spaced blocks through a simple pyramid.
    let vit: Vec<FeatureInfo> = (0..12)
        .map(|i| FeatureInfo::new(format!("blocks.{i}"), 16, 64))
        .collect();
    let v = SegHeadConfig::for_encoder(Decoder::Fpn, names(2), &vit).unwrap();
    assert_eq!(v.out_indices, vec![2, 5, 8, 11]);
    assert!(v.simple_pyramid);
    assert_eq!(v.decoder_reductions(), vec![4, 8, 16, 32]);
    // Errors: a missing 1/4 map for FPN, one class, no maps.
    let no4: Vec<FeatureInfo> = info.iter().filter(|f| f.reduction != 4).cloned().collect();
    let e = SegHeadConfig::for_encoder(Decoder::Fpn, names(2), &no4)
        .unwrap_err()
        .to_string();
    assert!(e.contains("1/4"), "{e}");
    assert!(SegHeadConfig::for_encoder(Decoder::Fpn, names(1), &info).is_err());
    assert!(SegHeadConfig::for_encoder(Decoder::Unet, names(2), &[]).is_err());
    assert_eq!("unet".parse::<Decoder>().unwrap(), Decoder::Unet);
    assert!("deeplab".parse::<Decoder>().is_err());
}

#[test]
fn heads_output_logits_at_the_input_size() {
    let info = resnet_info();
    for decoder in [Decoder::Fpn, Decoder::Unet] {
        let cfg = SegHeadConfig::for_encoder(decoder, names(3), &info).unwrap();
        let head = SegHead::new(cfg.clone(), &Device::Cpu, 1).unwrap();
        for (h, w) in [(64, 96), (100, 70)] {
            let f = maps(&info, &cfg.out_indices, 2, h, w, 3);
            let y = head.forward(&f, (h, w), None).unwrap();
            assert_eq!(y.dims(), &[2, 3, h, w], "{decoder:?} at {h}×{w}");
            let v: Vec<f32> = y.flatten_all().unwrap().to_vec1().unwrap();
            assert!(v.iter().all(|x| x.is_finite()));
            assert!(v.iter().any(|x| x.abs() > 1e-6), "{decoder:?}: all-zero logits");
        }
        // The wrong number of maps or channels is an error, not a panic.
        let f = maps(&info, &cfg.out_indices, 1, 64, 64, 3);
        assert!(head.forward(&f[1..], (64, 64), None).is_err());
        let bad = maps(&info, &[0, 0, 0, 0, 0][..cfg.out_indices.len()], 1, 64, 64, 3);
        assert!(head.forward(&bad, (64, 64), None).is_err());
    }
    // The simple pyramid of a single-scale encoder.
    let vit: Vec<FeatureInfo> = (0..4).map(|i| FeatureInfo::new(format!("blocks.{i}"), 16, 8)).collect();
    let cfg = SegHeadConfig::for_encoder(Decoder::Fpn, names(2), &vit).unwrap();
    let head = SegHead::new(cfg.clone(), &Device::Cpu, 1).unwrap();
    let f = maps(&vit, &cfg.out_indices, 1, 64, 64, 4);
    assert_eq!(head.forward(&f, (64, 64), None).unwrap().dims(), &[1, 2, 64, 64]);
}

#[test]
fn every_parameter_gets_a_gradient_and_save_load_roundtrips() {
    let info = resnet_info();
    for decoder in [Decoder::Fpn, Decoder::Unet] {
        let cfg = SegHeadConfig::for_encoder(decoder, names(2), &info).unwrap();
        let head = SegHead::new(cfg.clone(), &Device::Cpu, 5).unwrap();
        let f = maps(&info, &cfg.out_indices, 2, 64, 64, 6);
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let y = head.forward(&f, (64, 64), Some(&mut rng)).unwrap();
        let loss = y.sqr().unwrap().mean_all().unwrap();
        let grads = loss.backward().unwrap();
        let vars = head.vars();
        assert!(vars.len() > 10, "{decoder:?}: {} vars", vars.len());
        for (name, v) in &vars {
            let g = grads
                .get(v)
                .unwrap_or_else(|| panic!("{decoder:?}: no gradient for {name}"));
            let s = g.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(s.is_finite() && s > 0.0, "{decoder:?}: {name} gradient {s}");
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seg.safetensors");
        head.save(&path).unwrap();
        let back = SegHead::load(&path, &Device::Cpu).unwrap();
        assert_eq!(back.config(), head.config());
        let a: Vec<f32> = head
            .forward(&f, (64, 64), None)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let b: Vec<f32> = back
            .forward(&f, (64, 64), None)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(a, b, "{decoder:?}: reloaded head differs");
        // A corrupt config is one error naming the file.
        std::fs::write(SegHead::config_path(&path), "{").unwrap();
        let e = SegHead::load(&path, &Device::Cpu).unwrap_err().to_string();
        assert!(e.contains("seg.safetensors.json"), "{e}");
    }
}

#[test]
fn bilinear_resize_and_nearest_upsampling_match_pytorch() {
    let x = Tensor::from_vec(vec![1f32, 2., 3., 4.], (1, 1, 2, 2), &Device::Cpu).unwrap();
    // torch.nn.functional.interpolate(x, size=(4, 4), mode="bilinear", align_corners=False)
    let y: Vec<f32> = resize_bilinear(&x, 4, 4, false)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    #[rustfmt::skip]
    let want = [1.0, 1.25, 1.75, 2.0, 1.5, 1.75, 2.25, 2.5, 2.5, 2.75, 3.25, 3.5, 3.0, 3.25, 3.75, 4.0];
    for (a, b) in y.iter().zip(want) {
        assert!((a - b).abs() < 1e-6, "{y:?}");
    }
    // align_corners=True, 2×2 → 3×3.
    let y: Vec<f32> = resize_bilinear(&x, 3, 3, true)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let want = [1.0, 1.5, 2.0, 2.0, 2.5, 3.0, 3.0, 3.5, 4.0];
    for (a, b) in y.iter().zip(want) {
        assert!((a - b).abs() < 1e-6, "{y:?}");
    }
    let y: Vec<f32> = upsample_nearest2x(&x)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(y, vec![1., 1., 2., 2., 1., 1., 2., 2., 3., 3., 4., 4., 3., 3., 4., 4.]);
}

#[test]
fn group_norm_normalises_each_group() {
    let store = backbones::ParamStore::empty(DType::F32, &Device::Cpu);
    let gn = GroupNorm::new(&store, "gn", 2, 4).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let v: Vec<f32> = (0..2 * 4 * 3 * 3).map(|_| rng.gen_range(-3f32..5.0)).collect();
    let x = Tensor::from_vec(v, (2, 4, 3, 3), &Device::Cpu).unwrap();
    let y = gn.forward(&x).unwrap().reshape((2, 2, 18)).unwrap();
    let mean: Vec<f32> = y.mean(2).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let var: Vec<f32> = y
        .sqr()
        .unwrap()
        .mean(2)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert!(mean.iter().all(|m| m.abs() < 1e-5), "{mean:?}");
    assert!(var.iter().all(|v| (v - 1.0).abs() < 1e-3), "{var:?}");
    assert!(GroupNorm::new(&store, "bad", 3, 4).is_err());
}

/// Issue 12 ("works with every backbone in the registry") and the detector alike: every registered architecture
/// (default weights; the shapes are what is checked) under an FPN and a U-Net decoder gives logits at the input
/// size, and under FCOS a prediction per location of every level.
#[test]
fn dense_heads_fit_every_registered_backbone() {
    let dev = Device::Cpu;
    for spec in backbones::registry::all() {
        let store = backbones::ParamStore::empty(DType::F32, &dev);
        let backbone = backbones::zoo::build(&spec.architecture, &store).unwrap();
        let info = backbone.feature_info();
        let (h, w) = (112, 112);
        let x = Tensor::randn(0f32, 1.0, (1, 3, h, w), &dev).unwrap();
        for decoder in [Decoder::Fpn, Decoder::Unet] {
            let cfg = SegHeadConfig::for_encoder(decoder, names(3), &info)
                .unwrap_or_else(|e| panic!("{} {decoder:?}: {e}", spec.name));
            let head = SegHead::new(cfg, &dev, 0).unwrap();
            let feats = backbone
                .forward_multiscale(&x, false, &head.config().out_indices)
                .unwrap();
            let logits = head.forward(&feats, (h, w), None).unwrap();
            assert_eq!(logits.dims(), &[1, 3, h, w], "{} {decoder:?}", spec.name);
        }
        let cfg =
            heads::DetHeadConfig::for_encoder(names(2), &info, 3).unwrap_or_else(|e| panic!("{}: {e}", spec.name));
        let det = heads::DetHead::new(cfg, &dev, 0).unwrap();
        let feats = backbone
            .forward_multiscale(&x, false, &det.config().out_indices)
            .unwrap();
        let out = det.forward(&feats, (h, w)).unwrap();
        let locations: usize = out.levels.iter().map(|l| l.len()).sum();
        assert_eq!(out.cls.dims(), &[1, locations, 2], "{}", spec.name);
    }
}
