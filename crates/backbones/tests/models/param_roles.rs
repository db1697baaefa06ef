//! Parameter roles recorded where layers create their parameters, and layer-decay ids.

use std::collections::HashMap;

use backbones::{zoo, Backbone, ParamRole, ParamStore};
use candle_core::{DType, Device};

fn built(arch: &str) -> (Box<dyn Backbone>, HashMap<String, ParamRole>) {
    let store = ParamStore::empty(DType::F32, &Device::Cpu);
    let model = zoo::build(arch, &store).unwrap_or_else(|e| panic!("{arch}: {e}"));
    let roles = store.roles();
    (model, roles)
}

#[test]
fn every_small_parameter_of_every_architecture_has_a_role() {
    for arch in zoo::ARCHITECTURES {
        let (model, roles) = built(arch);
        let mut weights = 0;
        for p in model.store().params() {
            assert_eq!(roles[p.name()], p.role(), "{arch}: {}", p.name());
            if p.rank() <= 1 {
                assert_ne!(p.role(), ParamRole::Weight, "{arch}: {} is 1-d but a Weight", p.name());
            }
            if p.role() == ParamRole::Weight {
                weights += 1;
                assert!(p.rank() >= 2, "{arch}: {}", p.name());
            }
            if p.name().ends_with(".bias") {
                assert!(
                    matches!(p.role(), ParamRole::Bias | ParamRole::Norm),
                    "{arch}: {} is {:?}",
                    p.name(),
                    p.role()
                );
            }
        }
        assert!(weights > 0, "{arch} has no weights");
    }
}

#[test]
fn named_parameters_have_the_expected_roles() {
    let (_, vit) = built("vit_tiny_patch16_224");
    for (name, role) in [
        ("pos_embed", ParamRole::PositionEmbedding),
        ("cls_token", ParamRole::Token),
        ("norm.weight", ParamRole::Norm),
        ("norm.bias", ParamRole::Norm),
        ("blocks.0.norm1.weight", ParamRole::Norm),
        ("blocks.0.attn.qkv.bias", ParamRole::Bias),
        ("blocks.0.attn.qkv.weight", ParamRole::Weight),
        ("patch_embed.proj.weight", ParamRole::Weight),
        ("patch_embed.proj.bias", ParamRole::Bias),
        ("head.weight", ParamRole::Weight),
    ] {
        assert_eq!(vit[name], role, "vit_tiny {name}");
    }
    let (_, dino) = built("vit_small_patch14_dinov2");
    assert_eq!(dino["blocks.0.ls1.gamma"], ParamRole::LayerScale);
    assert_eq!(dino["blocks.11.ls2.gamma"], ParamRole::LayerScale);
    let (_, cnx) = built("convnext_atto");
    for (name, role) in [
        ("stages.0.blocks.0.gamma", ParamRole::LayerScale),
        ("stages.0.blocks.0.conv_dw.weight", ParamRole::Weight),
        ("stages.0.blocks.0.mlp.fc1.weight", ParamRole::Weight),
        ("stages.0.blocks.0.mlp.fc1.bias", ParamRole::Bias),
        ("stages.1.downsample.0.weight", ParamRole::Norm),
        ("stem.0.weight", ParamRole::Weight),
        ("stem.1.weight", ParamRole::Norm),
        ("head.norm.weight", ParamRole::Norm),
    ] {
        assert_eq!(cnx[name], role, "convnext_atto {name}");
    }
    let (_, r18) = built("resnet18");
    assert_eq!(r18["conv1.weight"], ParamRole::Weight);
    assert_eq!(r18["bn1.weight"], ParamRole::Norm);
    assert_eq!(r18["fc.bias"], ParamRole::Bias);
}

#[test]
fn a_reg4_vit_tags_its_register_tokens() {
    let store = ParamStore::empty(DType::F32, &Device::Cpu);
    let mut cfg = backbones::vit::VIT_SMALL_PATCH14_REG4_DINOV2;
    cfg.depth = 1;
    cfg.img_size = 28;
    backbones::vit::Vit::new(&cfg, &store).unwrap();
    let roles = store.roles();
    assert_eq!(roles["reg_token"], ParamRole::Token);
    assert_eq!(roles["cls_token"], ParamRole::Token);
}

#[test]
fn layer_ids_follow_beit_for_vit_and_timm_for_convnext() {
    let (vit, _) = built("vit_tiny_patch16_224");
    assert_eq!(vit.num_layers(), Some(12));
    for (name, id) in [
        ("patch_embed.proj.weight", 0),
        ("cls_token", 0),
        ("pos_embed", 0),
        ("blocks.0.norm1.weight", 1),
        ("blocks.11.mlp.fc2.weight", 12),
        ("norm.weight", 13),
        ("head.bias", 13),
    ] {
        assert_eq!(vit.layer_id(name), Some(id), "vit {name}");
    }
    let (cnx, _) = built("convnext_atto"); // depths 2, 2, 6, 2
    assert_eq!(cnx.num_layers(), Some(12));
    for (name, id) in [
        ("stem.0.weight", 0),
        ("stages.0.blocks.0.conv_dw.weight", 1),
        ("stages.0.blocks.1.gamma", 2),
        ("stages.1.downsample.1.weight", 3),
        ("stages.1.blocks.0.norm.weight", 3),
        ("stages.3.blocks.1.mlp.fc2.bias", 12),
        ("head.norm.weight", 13),
        ("head.fc.weight", 13),
    ] {
        assert_eq!(cnx.layer_id(name), Some(id), "convnext {name}");
    }
    let (r18, _) = built("resnet18");
    assert_eq!((r18.num_layers(), r18.layer_id("conv1.weight")), (None, None));
}
