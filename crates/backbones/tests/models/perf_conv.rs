//! The folded Conv+BN (+ activation) of the layers matches the unfolded layers in eval and trains in train mode.

use crate::support::max_abs_diff;
use backbones::fused::conv_bn_act;
use backbones::layers::{Activation, BatchNorm2d, Conv2d, ConvConfig, Padding};
use backbones::ParamStore;
use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn rand_t(dims: &[usize], rng: &mut ChaCha8Rng) -> Tensor {
    let n: usize = dims.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
    Tensor::from_vec(v, dims, &Device::Cpu).unwrap()
}

fn conv_bn(
    store: &ParamStore,
    rng: &mut ChaCha8Rng,
    k: usize,
    stride: usize,
    padding: Padding,
) -> (Conv2d, BatchNorm2d) {
    let cfg = ConvConfig {
        in_channels: 3,
        out_channels: 5,
        kernel: k,
        stride,
        padding,
        groups: 1,
        bias: false,
    };
    let conv = Conv2d::new(store, "c", cfg).unwrap();
    let bn = BatchNorm2d::new(store, "bn", 5, 1e-5).unwrap();
    conv.weight.set(&rand_t(&[5, 3, k, k], rng)).unwrap();
    bn.weight.set(&rand_t(&[5], rng)).unwrap();
    bn.bias.set(&rand_t(&[5], rng)).unwrap();
    bn.running_mean.set(&rand_t(&[5], rng)).unwrap();
    bn.running_var
        .set(&(rand_t(&[5], rng).abs().unwrap() + 0.5).unwrap())
        .unwrap();
    (conv, bn)
}

#[test]
fn folded_conv_bn_matches_unfolded_in_eval_and_trains_in_train_mode() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let store = ParamStore::empty(DType::F32, &Device::Cpu);
    let (conv, bn) = conv_bn(&store, &mut rng, 3, 2, Padding::TfSame);
    let x = rand_t(&[2, 3, 9, 9], &mut rng);
    for act in [
        Activation::None,
        Activation::Relu,
        Activation::Relu6,
        Activation::HardSwish,
    ] {
        let want = act
            .forward(&bn.forward(&conv.forward(&x).unwrap(), false).unwrap())
            .unwrap();
        let got = conv_bn_act(&conv, &bn, act, &x, false).unwrap();
        assert!(max_abs_diff(&got, &want) < 1e-4, "{act:?}");
    }
    // Trainable: batch statistics (not folded), running stats move, gradients reach conv and BN parameters.
    conv.weight.set_trainable(true).unwrap();
    bn.weight.set_trainable(true).unwrap();
    bn.bias.set_trainable(true).unwrap();
    let before = bn.running_mean.tensor();
    let y = conv_bn_act(&conv, &bn, Activation::Relu, &x, true).unwrap();
    assert!(max_abs_diff(&before, &bn.running_mean.tensor()) > 0.0);
    let g = y.sum_all().unwrap().backward().unwrap();
    for p in [&conv.weight, &bn.weight, &bn.bias] {
        assert!(g.get(p.var().unwrap().as_tensor()).is_some(), "{}", p.name());
    }
    // Trainable but eval (folded through tracked ops): gradients match the unfolded path.
    let gf = conv_bn_act(&conv, &bn, Activation::Relu, &x, false)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let want = Activation::Relu
        .forward(&bn.forward(&conv.forward(&x).unwrap(), false).unwrap())
        .unwrap();
    let gu = want.sum_all().unwrap().backward().unwrap();
    let wv = conv.weight.var().unwrap();
    assert!(max_abs_diff(gf.get(wv.as_tensor()).unwrap(), gu.get(wv.as_tensor()).unwrap()) < 1e-3);
}
