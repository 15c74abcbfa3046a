"""The detector's size params build the model they document, a CPU gets its own schedule, and
checkpoints written before the size params existed still load."""
import dataclasses

import pytest
import torch

from c3det import checkpoint
from c3det.config import C3DetParams
from c3det.model import build_model
from tinyloop.params import ParamsError, build


@pytest.fixture(autouse=True)
def _threads(one_torch_thread):
    yield


def _plain(**size) -> torch.nn.Module:
    return build_model("plain", 3, C3DetParams(weights="none", **size))


def test_fpn_channels_sets_the_width_of_the_fpn_the_rpn_head_and_the_box_head_input():
    for width in (64, 256):
        det = _plain(fpn_channels=width).detector
        feats = det.backbone(torch.rand(1, 3, 64, 64))
        assert {f.shape[1] for f in feats.values()} == {width}
        assert det.rpn.head.conv[0][0].in_channels == width
        assert det.roi_heads.box_head.fc6.in_features == width * 7 * 7


def test_box_head_dim_sets_both_fc_layers_and_the_predictor():
    head = _plain(box_head_dim=256).detector.roi_heads
    assert head.box_head.fc6.out_features == head.box_head.fc7.out_features == 256
    assert head.box_predictor.cls_score.in_features == 256
    assert head.box_predictor.cls_score.out_features == 4      # 3 classes + background


def test_late_fusion_fuses_at_the_fpn_width():
    model = build_model("c3det", 3, C3DetParams(weights="none", fpn_channels=64,
                                                lf_backbone="light"))
    batch = model.prepare([torch.rand(3, 64, 64)], [torch.tensor([[20., 20., 1.]])])
    out = model.fuse(model.image_features(batch), batch)
    assert {f.shape[1] for f in out.values()} == {64}


def test_roi_and_proposal_counts_reach_the_built_detector():
    det = _plain(roi_batch_size=64, rpn_proposals_train=500).detector
    assert det.roi_heads.fg_bg_sampler.batch_size_per_image == 64
    assert det.rpn._pre_nms_top_n["training"] == det.rpn._post_nms_top_n["training"] == 500


def test_freeze_through_stride_freezes_the_lite_up_to_that_stride():
    default = build_model("plain", 3, C3DetParams())
    body = default.detector.backbone.body
    assert not any(p.requires_grad for p in body._blocks[0].parameters())   # stride 2
    assert all(p.requires_grad for p in body._blocks[1].parameters())
    frozen8 = build_model("plain", 3, C3DetParams(freeze_through_stride=8)).detector.backbone.body
    last8 = frozen8.pyramid_taps[1]                           # the last block at stride 8
    assert not any(p.requires_grad for b in frozen8._blocks[:last8 + 1] for p in b.parameters())
    assert all(p.requires_grad for p in frozen8._blocks[last8 + 1].parameters())
    assert not frozen8._conv_stem.weight.requires_grad
    scratch = build_model("plain", 3, C3DetParams(weights="none", freeze_through_stride=8))
    assert all(p.requires_grad for p in scratch.detector.backbone.body.parameters())


def test_freeze_through_stride_on_resnet(tmp_path):
    import torchvision
    state = torchvision.models.resnet18(weights=None).state_dict()
    torch.save(state, tmp_path / "r18.pth")
    for stride, first_trainable in ((None, "layer2"), (8, "layer3"), (2, "layer1")):
        p = C3DetParams(backbone="resnet18", weights=str(tmp_path / "r18.pth"),
                        freeze_through_stride=stride)
        body = build_model("plain", 3, p).detector.backbone.body
        trainable = sorted({n.split(".")[0] for n, q in body.named_parameters() if q.requires_grad})
        assert trainable[0] == first_trainable, (stride, trainable)


def test_bad_sizes_are_named():
    with pytest.raises(ParamsError, match="c3det: fpn_channels .4. and box_head_dim"):
        build(C3DetParams, {"fpn_channels": 4}, "c3det")
    with pytest.raises(ParamsError, match="freeze_through_stride .3. must be 2, 4, 8, 16"):
        build(C3DetParams, {"freeze_through_stride": 3}, "c3det")


def test_the_cpu_section_replaces_the_gpu_defaults_on_a_cpu_only():
    p = build(C3DetParams, {"roi_batch_size": 512, "train": {"crop_size": 512, "epochs": 24},
                            "cpu": {"roi_batch_size": 128, "train": {"crop_size": 192}}},
              "c3det")
    cpu = p.on_device("cpu")
    assert (cpu.roi_batch_size, cpu.train.crop_size, cpu.train.epochs) == (128, 192, 24)
    assert cpu.cpu == {}                          # applied once
    assert p.on_device("cuda") is p
    shipped = C3DetParams().on_device("cpu")      # what a user gets without editing params
    assert (shipped.roi_batch_size, shipped.train.crop_size, shipped.train.warmup_iters) == \
        (128, 192, 50)
    assert build(C3DetParams, {"cpu": {}}, "c3det").on_device("cpu").train.crop_size == 512


def test_a_value_changed_in_the_section_is_kept_on_a_cpu():
    p = build(C3DetParams, {"roi_batch_size": 64, "train": {"crop_size": 96}}, "c3det")
    cpu = p.on_device("cpu")
    assert (cpu.roi_batch_size, cpu.train.crop_size, cpu.train.warmup_iters) == (64, 96, 50)


@pytest.mark.parametrize("cpu,message", [
    ({"train": {"crop": 192}}, r"c3det: cpu.train.crop: unknown key \(did you mean 'crop_size'"),
    ({"roi_batch_size": "many"}, r"c3det: cpu.roi_batch_size: expected a whole number"),
    ({"cpu": {}}, r"c3det: cpu: .*cannot hold another cpu section"),
])
def test_a_bad_cpu_section_is_named_at_load(cpu, message):
    with pytest.raises(ParamsError, match=message):
        build(C3DetParams, {"cpu": cpu}, "c3det")


def test_a_checkpoint_from_before_the_size_params_loads_at_torchvisions_widths(tmp_path):
    """Files written before fpn_channels / box_head_dim existed hold no such keys: they were
    256 / 1024 wide, whatever the default is now."""
    old_params = dataclasses.replace(C3DetParams(weights="none"), fpn_channels=256,
                                     box_head_dim=1024)
    model = build_model("plain", 2, old_params)
    stored = dataclasses.asdict(old_params)
    for key in ("fpn_channels", "box_head_dim", "freeze_through_stride", "cpu"):
        del stored[key]
    checkpoint.save(tmp_path / "model.pt", model, {"kind": "plain", "classes": ["a", "b"],
                                                   "params": stored})
    loaded, meta = checkpoint.load(tmp_path / "model.pt")
    assert loaded.params.fpn_channels == 256 and loaded.params.box_head_dim == 1024
    x = [torch.rand(3, 64, 64)]
    with torch.no_grad():
        a, b = model.eval()(x), loaded(x)
    assert torch.equal(a[0]["scores"], b[0]["scores"])


def test_a_checkpoint_of_another_width_fails_naming_the_file(tmp_path):
    model = build_model("plain", 2, C3DetParams(weights="none", fpn_channels=64))
    stored = dataclasses.asdict(model.params)
    stored["fpn_channels"] = 128                       # meta that does not match the weights
    checkpoint.save(tmp_path / "model.pt", model, {"kind": "plain", "classes": ["a", "b"],
                                                   "params": stored})
    with pytest.raises(checkpoint.CheckpointError, match=r"model.pt: weights do not fit"):
        checkpoint.load(tmp_path / "model.pt")
