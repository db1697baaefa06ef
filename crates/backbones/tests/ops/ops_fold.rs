//! BatchNorm folding is exact: conv with the folded parameters equals conv then the eval-mode affine.

use backbones::ops::{depthwise_conv2d, fold_bn};
use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn randn(rng: &mut ChaCha8Rng, shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
}

fn affine(y: &Tensor, scale: &Tensor, shift: &Tensor) -> Tensor {
    let c = scale.dim(0).unwrap();
    y.broadcast_mul(&scale.reshape((1, c, 1, 1)).unwrap())
        .unwrap()
        .broadcast_add(&shift.reshape((1, c, 1, 1)).unwrap())
        .unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar().unwrap()
}

#[test]
fn folded_conv_equals_conv_then_batchnorm() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let x = randn(&mut rng, &[2, 4, 9, 9]);
    let w = randn(&mut rng, &[6, 4, 3, 3]);
    let scale = randn(&mut rng, &[6]);
    let shift = randn(&mut rng, &[6]);
    for bias in [None, Some(randn(&mut rng, &[6]))] {
        let (fw, fb) = fold_bn(&w, bias.as_ref(), &scale, &shift).unwrap();
        let mut y = x.conv2d(&w, 1, 2, 1, 1).unwrap();
        if let Some(b) = &bias {
            y = y.broadcast_add(&b.reshape((1, 6, 1, 1)).unwrap()).unwrap();
        }
        let want = affine(&y, &scale, &shift);
        let got = x
            .conv2d(&fw, 1, 2, 1, 1)
            .unwrap()
            .broadcast_add(&fb.reshape((1, 6, 1, 1)).unwrap())
            .unwrap();
        let d = max_diff(&got, &want);
        assert!(d < 1e-5, "max diff {d}");
    }
}

#[test]
fn folding_a_depthwise_conv_and_shape_errors() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let x = randn(&mut rng, &[2, 5, 8, 8]);
    let w = randn(&mut rng, &[5, 1, 5, 5]);
    let (scale, shift) = (randn(&mut rng, &[5]), randn(&mut rng, &[5]));
    let (fw, fb) = fold_bn(&w, None, &scale, &shift).unwrap();
    let want = affine(&depthwise_conv2d(&x, &w, 2, [1, 2, 1, 2]).unwrap(), &scale, &shift);
    let got = affine(
        &depthwise_conv2d(&x, &fw, 2, [1, 2, 1, 2]).unwrap(),
        &Tensor::ones(5, DType::F32, &Device::Cpu).unwrap(),
        &fb,
    );
    assert!(max_diff(&got, &want) < 1e-5);
    assert!(fold_bn(&w, None, &randn(&mut rng, &[4]), &shift).is_err());
    assert!(fold_bn(&w, Some(&randn(&mut rng, &[6])), &scale, &shift).is_err());
}
